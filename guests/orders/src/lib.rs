//! The orders service: turns a user's basket into an order, reserving stock.
//!
//! HTTP (mounted at `/orders`): `POST /` places an order, `GET /?user_id=` lists,
//! `GET /{id}` reads, `POST /{id}/pay`, `/ship`, `/cancel` move it along:
//! created → paid → shipped, created → cancelled, paid → cancelled.
//!
//! It checks the user through `switchyard:shop/directory` and holds stock
//! through `switchyard:shop/catalog`, all-or-nothing: when one item fails, the
//! items already held are released. Cancelling releases the stock, shipping
//! settles it.
//!
//! Placing and cancelling span two services with no transaction between
//! them, so each is a saga: its intent is written first (a `sagas` entry
//! naming the order and its lines), every step on goods is keyed by order
//! and line (a hold when placing, a return when cancelling: safe to
//! repeat), and the intent is removed only when every step is done. The
//! order itself is written once, when every line is held: a placement
//! costs the store no write for a `pending` order and no second one to
//! make it `created`. A crash or a trap halfway leaves the intent behind;
//! `recover` (called by the host at start-up and then periodically) finds
//! intents older than any request can run and finishes or undoes them by
//! what the order reached: an intent without an order is undone (its holds
//! released: the client never got its 201), a placed order has its holds
//! settled, a cancelled one its stock put back. So every unit taken belongs
//! to an order that exists once recovery has run, and stock = initial − Σ
//! qty of the orders not cancelled.

use std::time::{SystemTime, UNIX_EPOCH};

use guest_common::store::{StoreError, Table};
use guest_common::{Outcome, Reply, parse_body, query_param, segments};
use serde::{Deserialize, Serialize};

guest_common::service_bindings!("switchyard:shop/orders");

use exports::switchyard::platform::handler::Request;
use exports::switchyard::platform::recovery::Guest as Recovery;
use switchyard::shop::catalog::{self, StockError};
use switchyard::shop::directory;

/// The most lines one order may have.
const MAX_ITEMS: usize = 100;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// Being placed, as versions before 1.3.0 wrote an order before its
    /// stock was held; recovery undoes such an order if its placement
    /// stopped halfway. Never written now.
    Pending,
    Created,
    Paid,
    Shipped,
    Cancelled,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Created => "created",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Order {
    id: String,
    user_id: String,
    items: Vec<Line>,
    total_cents: u64,
    status: Status,
}

/// The intent of a saga on one order, written before its first step and
/// removed after its last.
#[derive(Serialize, Deserialize)]
struct Saga {
    /// The order's lines, for when the order itself was never written.
    lines: Vec<Line>,
    /// When it began, in ms since the Unix epoch.
    started_ms: u64,
    /// A cancellation whose stock is all back: only the returns are left to
    /// forget (restocking again would count twice once they are forgotten).
    #[serde(default)]
    restocked: bool,
}

#[derive(Serialize, Deserialize, Clone)]
struct Line {
    goods_id: String,
    qty: u32,
    price_cents: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    user_id: String,
    items: Vec<NewLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLine {
    goods_id: String,
    qty: u32,
}

fn orders_table() -> Result<Table, StoreError> {
    Table::open("orders")
}

fn sagas_table() -> Result<Table, StoreError> {
    Table::open("sagas")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The id of line `index` of order `order_id`, for its hold and its return.
fn line_id(order_id: &str, index: usize) -> String {
    format!("{order_id}#{index}")
}

/// Record the intent of a saga on `order_id`; a 409 when another one is
/// under way on the same order.
fn begin_saga(order_id: &str, lines: &[Line]) -> Result<(), Reply> {
    let saga = Saga {
        lines: lines.to_vec(),
        started_ms: now_ms(),
        restocked: false,
    };
    // A storage failure is a 503 (through `?`), not a conflict.
    if sagas_table()?.insert_new(order_id, &saga)? {
        Ok(())
    } else {
        Err(Reply::error(
            409,
            format!("order {order_id:?} is being changed; try again"),
        ))
    }
}

/// Every step of the saga on `order_id` is done.
fn end_saga(order_id: &str) -> Result<(), StoreError> {
    sagas_table()?.delete(order_id).map(|_| ())
}

struct Service;

guest_common::http_handler!(Service, route);

fn route(request: &Request) -> Outcome {
    let method = request.method.as_str();
    match (segments(&request.path).as_slice(), method) {
        ([], "GET") => list(&request.query),
        ([], "POST") => place(&request.body),
        ([], _) => Err(Reply::method_not_allowed(
            method,
            &request.path,
            "GET, POST",
        )),
        ([id], "GET") => read(id),
        ([_], _) => Err(Reply::method_not_allowed(method, &request.path, "GET")),
        ([id, action @ ("pay" | "ship" | "cancel")], "POST") => transition(id, action),
        ([_, "pay" | "ship" | "cancel"], _) => {
            Err(Reply::method_not_allowed(method, &request.path, "POST"))
        }
        _ => Err(Reply::route_not_found(method, &request.path)),
    }
}

fn read(id: &str) -> Outcome {
    match orders_table()?.get::<Order>(id)? {
        Some(order) => Ok(Reply::json(200, &order)),
        None => Err(Reply::not_found("order", id)),
    }
}

fn list(query: &str) -> Outcome {
    let user = query_param(query, "user_id");
    let orders: Vec<Order> = orders_table()?
        .all::<Order>()?
        .into_iter()
        .filter(|o| user.as_ref().is_none_or(|u| &o.user_id == u))
        .collect();
    Ok(Reply::json(200, &orders))
}

fn place(body: &[u8]) -> Outcome {
    let new: NewOrder = parse_body(body)?;
    if new.items.is_empty() {
        return Err(Reply::error(400, "items must not be empty"));
    }
    if new.items.len() > MAX_ITEMS {
        return Err(Reply::error(
            400,
            format!("an order has at most {MAX_ITEMS} items"),
        ));
    }
    if let Some(line) = new.items.iter().find(|l| l.qty == 0) {
        return Err(Reply::error(
            400,
            format!("qty of goods {:?} must be at least 1", line.goods_id),
        ));
    }
    if !directory::exists(&new.user_id) {
        return Err(Reply::error(
            422,
            format!("no user with id {:?}", new.user_id),
        ));
    }

    let lines: Vec<Line> = new
        .items
        .iter()
        .map(|l| Line {
            goods_id: l.goods_id.clone(),
            qty: l.qty,
            price_cents: 0,
        })
        .collect();
    // Not a counter: one key every order would write, across every host.
    let id = guest_common::unique_id("o");
    begin_saga(&id, &lines)?;
    let held = match hold_all(&id, &lines) {
        Ok(held) => held,
        Err(reply) => {
            undo_placement(&id, &lines)?;
            return Err(reply);
        }
    };
    // One write, once the stock is held: until then the intent alone
    // stands for the order (recovery undoes an intent without an order).
    let placed = Order {
        id: id.clone(),
        user_id: new.user_id,
        items: held.lines,
        total_cents: held.total_cents,
        status: Status::Created,
    };
    orders_table()?.insert(&id, &placed)?;
    // The order is placed and durable: the 201 stands whatever happens next.
    // Settling the holds and ending the intent are left to recovery if they
    // fail now.
    if settle_holds(&id, &placed.items) {
        let _ = end_saga(&id);
    }
    Ok(Reply::json(201, &placed))
}

/// The lines as held, with their prices, and the order total.
struct Held {
    lines: Vec<Line>,
    total_cents: u64,
}

/// Hold every line of order `order_id`; on a failure, the reply to give
/// (the lines held so far stay held until [`undo_placement`]).
fn hold_all(order_id: &str, lines: &[Line]) -> Result<Held, Reply> {
    let mut held = Held {
        lines: Vec::new(),
        total_cents: 0,
    };
    for (index, line) in lines.iter().enumerate() {
        let goods = catalog::hold(&line_id(order_id, index), &line.goods_id, line.qty)
            .map_err(|e| stock_reply(&line.goods_id, line.qty, e))?;
        held.lines.push(Line {
            goods_id: line.goods_id.clone(),
            qty: line.qty,
            price_cents: goods.price_cents,
        });
        held.total_cents = goods
            .price_cents
            .checked_mul(u64::from(line.qty))
            .and_then(|cost| held.total_cents.checked_add(cost))
            .ok_or_else(|| Reply::error(422, "the order total is too large"))?;
    }
    Ok(held)
}

/// Undo a placement that did not complete (its order never written):
/// release its holds, then forget the intent; whether all of it is done.
/// When a release fails, the intent stays, for recovery.
fn undo_placement(order_id: &str, lines: &[Line]) -> Result<bool, StoreError> {
    if !release_holds(order_id, lines) {
        return Ok(false);
    }
    end_saga(order_id)?;
    Ok(true)
}

fn stock_reply(goods_id: &str, qty: u32, e: StockError) -> Reply {
    match e {
        StockError::NotFound(_) => Reply::error(422, format!("no goods with id {goods_id:?}")),
        StockError::Insufficient(left) => Reply::error(
            409,
            format!("not enough stock of goods {goods_id:?}: {qty} asked, {left} left"),
        ),
        StockError::InvalidQuantity(q) => {
            Reply::error(400, format!("invalid quantity {q} for goods {goods_id:?}"))
        }
        StockError::Unavailable(why) => Reply::error(503, format!("goods unavailable: {why}")),
    }
}

/// Release the holds of `lines` of order `order_id`; whether all were.
/// Releasing is safe to repeat, and goods that no longer exist hold nothing.
fn release_holds(order_id: &str, lines: &[Line]) -> bool {
    each_line(order_id, lines, "release the hold of", |id, line| {
        catalog::release_hold(id, &line.goods_id)
    })
}

/// Settle the holds of a placed order; whether all were.
fn settle_holds(order_id: &str, lines: &[Line]) -> bool {
    each_line(order_id, lines, "settle the hold of", |id, line| {
        catalog::settle_hold(id, &line.goods_id)
    })
}

/// Do `step` for every line of order `order_id`, each under the line's id;
/// whether all succeeded (goods that no longer exist count as done).
fn each_line(
    order_id: &str,
    lines: &[Line],
    what: &str,
    step: impl Fn(&str, &Line) -> Result<catalog::Goods, StockError>,
) -> bool {
    let mut all = true;
    for (index, line) in lines.iter().enumerate() {
        match step(&line_id(order_id, index), line) {
            Ok(_) | Err(StockError::NotFound(_)) => {}
            Err(e) => {
                all = false;
                guest_common::log_info(
                    "orders",
                    &format!("could not {what} line {index} of order {order_id}: {e:?}"),
                );
            }
        }
    }
    all
}

fn transition(id: &str, action: &str) -> Outcome {
    let target = match action {
        "pay" => Status::Paid,
        "ship" => Status::Shipped,
        _ => Status::Cancelled,
    };
    // Cancelling puts stock back in goods: it is a saga.
    let saga = target == Status::Cancelled;
    if saga {
        begin_saga(id, &[])?;
    }
    let updated = orders_table()?.update(id, |mut order: Order| {
        let allowed = matches!(
            (order.status, target),
            (Status::Created, Status::Paid)
                | (Status::Paid, Status::Shipped)
                | (Status::Created | Status::Paid, Status::Cancelled)
        );
        if !allowed {
            return Err(Reply::error(
                409,
                format!(
                    "cannot {action} order {id:?}: it is {}",
                    order.status.name()
                ),
            ));
        }
        order.status = target;
        Ok(order)
    });
    let order = match updated {
        Ok(Some(order)) => order,
        refused => {
            if saga {
                end_saga(id)?;
            }
            return match refused {
                Ok(_) => Err(Reply::not_found("order", id)),
                Err(reply) => Err(reply),
            };
        }
    };
    if saga {
        // Cancelled and durable: the 200 stands; recovery finishes the rest
        // if this stops halfway.
        let _ = finish_cancel(&order);
    }
    Ok(Reply::json(200, &order))
}

/// Put a cancelled order's stock back, then forget the returns and the
/// intent. Whether all of it is done (else the intent stays, for recovery).
/// Returns are keyed like holds, so this works for orders placed before
/// holds existed too.
fn finish_cancel(order: &Order) -> Result<bool, StoreError> {
    let sagas = sagas_table()?;
    let restocked = sagas.get::<Saga>(&order.id)?.is_some_and(|s| s.restocked);
    if !restocked {
        if !each_line(&order.id, &order.items, "restock", |id, line| {
            catalog::restock(id, &line.goods_id, line.qty)
        }) {
            return Ok(false);
        }
        // From here on, restocking again would count twice.
        sagas.update(&order.id, |mut saga: Saga| {
            saga.restocked = true;
            Ok::<_, StoreError>(saga)
        })?;
    }
    if !each_line(
        &order.id,
        &order.items,
        "forget the return of",
        |id, line| catalog::forget_return(id, &line.goods_id),
    ) {
        return Ok(false);
    }
    end_saga(&order.id)?;
    Ok(true)
}

impl Recovery for Service {
    fn recover(grace_ms: u64) {
        if let Err(e) = recover_older_than(grace_ms) {
            guest_common::log_info("orders", &format!("recovery stopped: {}", e.0));
        }
    }
}

/// Finish or undo every saga that began more than `grace_ms` ago, by the
/// status its order reached.
fn recover_older_than(grace_ms: u64) -> Result<(), StoreError> {
    let sagas = sagas_table()?;
    let orders = orders_table()?;
    let now = now_ms();
    for id in sagas.keys()? {
        let Some(saga) = sagas.get::<Saga>(&id)? else {
            continue;
        };
        if now.saturating_sub(saga.started_ms) < grace_ms {
            continue;
        }
        let done = match orders.get::<Order>(&id)? {
            // A placement that stopped halfway: undo it.
            None => undo_placement(&id, &saga.lines).unwrap_or(false),
            // The same, as versions before 1.3.0 left it.
            Some(order) if order.status == Status::Pending => {
                release_holds(&id, &order.items)
                    && orders.delete(&id).is_ok()
                    && end_saga(&id).is_ok()
            }
            Some(order) if order.status == Status::Cancelled => finish_cancel(&order)?,
            // A placement that completed (or a cancellation that never
            // happened): its holds may still wait to be settled.
            Some(order) => settle_holds(&id, &order.items) && end_saga(&id).is_ok(),
        };
        if done {
            guest_common::log_info("orders", &format!("recovered order {id}"));
        }
    }
    Ok(())
}

export!(Service);
