//! The goods service: the shop's catalog of things for sale and their stock.
//!
//! HTTP (mounted at `/goods`): `POST /` creates, `GET /?limit=&offset=` lists,
//! `GET /{id}` reads, `PATCH /{id}` changes name, price or stock.
//! Other services use the typed `switchyard:shop/catalog` interface, whose stock
//! reservations are atomic (compare-and-swap), so concurrent orders never oversell.
//!
//! A hold (one order line being placed, say) or a return (one line of an order
//! being cancelled) is kept in the goods record itself, next to the stock it
//! moved: moving the stock and recording who moved it are one write, so a
//! crash can never separate them, and every step can be retried safely. They
//! stay only until the caller settles or forgets them: the record holds the
//! work in progress, not the history.

guest_common::service_bindings!("switchyard:shop/goods");

mod service;

use service::Service;

/// What this build of goods is: the service as shipped, which answers as
/// the service says and moves stock as asked. Test fixtures built from the
/// same source (`tests/fixtures/goods-*`) bring editions of their own.
mod edition {
    use guest_common::Reply;

    pub fn mark(reply: Reply) -> Reply {
        reply
    }

    pub fn before_taking_stock() {}
}

export!(Service);
