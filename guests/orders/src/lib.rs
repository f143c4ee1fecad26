//! The orders service: turns a user's basket into an order, reserving stock.
//!
//! HTTP (mounted at `/orders`): `POST /` places an order, `GET /?user_id=` lists,
//! `GET /{id}` reads, `POST /{id}/pay`, `/ship`, `/cancel` move it along:
//! created → paid → shipped, created → cancelled, paid → cancelled.
//!
//! It checks the user through `switchyard:shop/directory` and reserves stock
//! through `switchyard:shop/catalog`, all-or-nothing: when one item fails, the
//! items already reserved are released. Cancelling releases the stock.

use guest_common::store::{StoreError, Table, next_id};
use guest_common::{Outcome, Reply, parse_body, query_param, segments};
use serde::{Deserialize, Serialize};

guest_common::service_bindings!("switchyard:shop/orders");

use exports::switchyard::platform::handler::Request;
use switchyard::shop::catalog::{self, StockError};
use switchyard::shop::directory;

/// The most lines one order may have.
const MAX_ITEMS: usize = 100;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Status {
    Created,
    Paid,
    Shipped,
    Cancelled,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
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

    let mut reserved: Vec<Line> = Vec::new();
    let outcome = reserve_all(&new.items, &mut reserved).and_then(|total_cents| {
        let order = Order {
            id: next_id("o")?,
            user_id: new.user_id.clone(),
            items: std::mem::take(&mut reserved),
            total_cents,
            status: Status::Created,
        };
        match orders_table().and_then(|t| t.insert(&order.id, &order)) {
            Ok(()) => Ok(order),
            Err(e) => {
                reserved = order.items;
                Err(e.into())
            }
        }
    });
    match outcome {
        Ok(order) => Ok(Reply::json(201, &order)),
        Err(reply) => {
            release_all(&reserved);
            Err(reply)
        }
    }
}

/// Reserve every line, recording each success in `reserved`; the order total.
fn reserve_all(items: &[NewLine], reserved: &mut Vec<Line>) -> Result<u64, Reply> {
    let mut total: u64 = 0;
    for line in items {
        let goods = catalog::reserve(&line.goods_id, line.qty)
            .map_err(|e| stock_reply(&line.goods_id, line.qty, e))?;
        reserved.push(Line {
            goods_id: line.goods_id.clone(),
            qty: line.qty,
            price_cents: goods.price_cents,
        });
        total = goods
            .price_cents
            .checked_mul(u64::from(line.qty))
            .and_then(|cost| total.checked_add(cost))
            .ok_or_else(|| Reply::error(422, "the order total is too large"))?;
    }
    Ok(total)
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

/// Put reserved stock back. A failure is logged: the order is already void.
fn release_all(lines: &[Line]) {
    for line in lines {
        if let Err(e) = catalog::release(&line.goods_id, line.qty) {
            guest_common::log_info(
                "orders",
                &format!("could not release {} of {}: {e:?}", line.qty, line.goods_id),
            );
        }
    }
}

fn transition(id: &str, action: &str) -> Outcome {
    let target = match action {
        "pay" => Status::Paid,
        "ship" => Status::Shipped,
        _ => Status::Cancelled,
    };
    let mut released_lines = Vec::new();
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
        released_lines = order.items.clone();
        Ok(order)
    })?;
    let Some(order) = updated else {
        return Err(Reply::not_found("order", id));
    };
    // Only the write that moved the order to cancelled gets here with that
    // target, so the stock is released exactly once.
    if target == Status::Cancelled {
        release_all(&released_lines);
    }
    Ok(Reply::json(200, &order))
}

export!(Service);
