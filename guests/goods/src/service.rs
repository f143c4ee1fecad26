//! What goods does: its HTTP API and the catalog interface (see the crate
//! root for the service as a whole).

use guest_common::store::{StoreError, Table, next_id};
use guest_common::{Outcome, Reply, parse_body, query_u32, require_text, segments};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::edition;
use crate::exports::switchyard::platform::handler::Request;
use crate::exports::switchyard::shop::catalog::{
    Goods as CatalogGoods, Guest as Catalog, StockError,
};

/// Listing page size when the client gives no `limit`, and the most it may ask for.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// Goods as clients see them; `stock` is what can still be ordered.
#[derive(Serialize, Deserialize, Clone)]
struct Goods {
    id: String,
    name: String,
    price_cents: u64,
    stock: u32,
}

/// Goods as stored: the goods and the holds on their stock.
#[derive(Serialize, Deserialize, Clone)]
struct Record {
    #[serde(flatten)]
    goods: Goods,
    /// Hold id → units taken out of `stock` for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    holds: BTreeMap<String, u32>,
    /// Return id → units put back into `stock` for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    returns: BTreeMap<String, u32>,
}

impl Record {
    fn new(goods: Goods) -> Record {
        Record {
            goods,
            holds: BTreeMap::new(),
            returns: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGoods {
    name: String,
    price_cents: u64,
    stock: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoodsChange {
    name: Option<String>,
    price_cents: Option<u64>,
    stock: Option<u32>,
}

fn goods_table() -> Result<Table, StoreError> {
    Table::open("goods")
}

pub struct Service;

guest_common::http_handler!(Service, serve);

/// Route, and let the edition mark the answer.
fn serve(request: &Request) -> Outcome {
    route(request).map(edition::mark).map_err(edition::mark)
}

fn route(request: &Request) -> Outcome {
    let method = request.method.as_str();
    match segments(&request.path).as_slice() {
        [] => match method {
            "GET" => list(&request.query),
            "POST" => create(&request.body),
            _ => Err(Reply::method_not_allowed(
                method,
                &request.path,
                "GET, POST",
            )),
        },
        [id] => match method {
            "GET" => read(id),
            "PATCH" => change(id, &request.body),
            _ => Err(Reply::method_not_allowed(
                method,
                &request.path,
                "GET, PATCH",
            )),
        },
        _ => Err(Reply::route_not_found(method, &request.path)),
    }
}

fn create(body: &[u8]) -> Outcome {
    let new: NewGoods = parse_body(body)?;
    let goods = Goods {
        id: next_id("g")?,
        name: require_text("name", &new.name)?,
        price_cents: new.price_cents,
        stock: new.stock,
    };
    goods_table()?.insert(&goods.id, &Record::new(goods.clone()))?;
    Ok(Reply::json(201, &goods))
}

fn read(id: &str) -> Outcome {
    match goods_table()?.get::<Record>(id)? {
        Some(record) => Ok(Reply::json(200, &record.goods)),
        None => Err(Reply::not_found("goods", id)),
    }
}

fn list(query: &str) -> Outcome {
    let limit = query_u32(query, "limit", DEFAULT_LIMIT)?;
    let offset = query_u32(query, "offset", 0)?;
    if limit > MAX_LIMIT {
        return Err(Reply::error(
            400,
            format!("limit must be at most {MAX_LIMIT}"),
        ));
    }
    Ok(Reply::json(200, &page(offset, limit)?))
}

fn page(offset: u32, limit: u32) -> Result<Vec<Goods>, StoreError> {
    let records: Vec<Record> = goods_table()?.page(offset as usize, limit as usize)?;
    Ok(records.into_iter().map(|record| record.goods).collect())
}

fn change(id: &str, body: &[u8]) -> Outcome {
    let change: GoodsChange = parse_body(body)?;
    if change.name.is_none() && change.price_cents.is_none() && change.stock.is_none() {
        return Err(Reply::error(
            400,
            "nothing to change: give name, price_cents and/or stock",
        ));
    }
    let name = change
        .name
        .as_deref()
        .map(|n| require_text("name", n))
        .transpose()?;
    let updated = goods_table()?.update(id, |mut record: Record| {
        let goods = &mut record.goods;
        if let Some(name) = &name {
            goods.name = name.clone();
        }
        goods.price_cents = change.price_cents.unwrap_or(goods.price_cents);
        goods.stock = change.stock.unwrap_or(goods.stock);
        Ok::<_, Reply>(record)
    })?;
    match updated {
        Some(record) => Ok(Reply::json(200, &record.goods)),
        None => Err(Reply::not_found("goods", id)),
    }
}

// === impl Catalog ===

impl From<Goods> for CatalogGoods {
    fn from(g: Goods) -> CatalogGoods {
        CatalogGoods {
            id: g.id,
            name: g.name,
            price_cents: g.price_cents,
            stock: g.stock,
        }
    }
}

impl From<StoreError> for StockError {
    fn from(e: StoreError) -> StockError {
        StockError::Unavailable(e.0)
    }
}

/// Change the record of goods `id` atomically with `change`; the goods as
/// they are after it.
fn change_stock(
    id: &str,
    change: impl FnMut(Record) -> Result<Record, StockError>,
) -> Result<CatalogGoods, StockError> {
    goods_table()?
        .update(id, change)?
        .map(|record| record.goods.into())
        .ok_or_else(|| StockError::NotFound(id.to_string()))
}

/// Stock moves by at least one unit; checked before the goods are looked up.
fn require_quantity(qty: u32) -> Result<(), StockError> {
    if qty == 0 {
        return Err(StockError::InvalidQuantity(qty));
    }
    Ok(())
}

fn take(goods: &mut Goods, qty: u32) -> Result<(), StockError> {
    goods.stock = goods
        .stock
        .checked_sub(qty)
        .ok_or(StockError::Insufficient(goods.stock))?;
    Ok(())
}

fn put_back(goods: &mut Goods, qty: u32) -> Result<(), StockError> {
    goods.stock = goods
        .stock
        .checked_add(qty)
        .ok_or(StockError::InvalidQuantity(qty))?;
    Ok(())
}

impl Catalog for Service {
    fn get(id: String) -> Option<CatalogGoods> {
        goods_table()
            .ok()?
            .get::<Record>(&id)
            .ok()
            .flatten()
            .map(|record| record.goods.into())
    }

    fn list(offset: u32, limit: u32) -> Vec<CatalogGoods> {
        page(offset, limit.min(MAX_LIMIT))
            .map(|goods| goods.into_iter().map(Into::into).collect())
            .unwrap_or_default()
    }

    fn reserve(id: String, qty: u32) -> Result<CatalogGoods, StockError> {
        edition::before_taking_stock();
        require_quantity(qty)?;
        change_stock(&id, |mut record| {
            take(&mut record.goods, qty)?;
            Ok(record)
        })
    }

    fn release(id: String, qty: u32) -> Result<CatalogGoods, StockError> {
        require_quantity(qty)?;
        change_stock(&id, |mut record| {
            put_back(&mut record.goods, qty)?;
            Ok(record)
        })
    }

    fn hold(hold_id: String, id: String, qty: u32) -> Result<CatalogGoods, StockError> {
        edition::before_taking_stock();
        require_quantity(qty)?;
        change_stock(&id, |mut record| {
            if !record.holds.contains_key(&hold_id) {
                take(&mut record.goods, qty)?;
                record.holds.insert(hold_id.clone(), qty);
            }
            Ok(record)
        })
    }

    fn release_hold(hold_id: String, id: String) -> Result<CatalogGoods, StockError> {
        change_stock(&id, |mut record| {
            if let Some(qty) = record.holds.remove(&hold_id) {
                put_back(&mut record.goods, qty)?;
            }
            Ok(record)
        })
    }

    fn settle_hold(hold_id: String, id: String) -> Result<CatalogGoods, StockError> {
        change_stock(&id, |mut record| {
            record.holds.remove(&hold_id);
            Ok(record)
        })
    }

    fn restock(return_id: String, id: String, qty: u32) -> Result<CatalogGoods, StockError> {
        require_quantity(qty)?;
        change_stock(&id, |mut record| {
            if !record.returns.contains_key(&return_id) {
                put_back(&mut record.goods, qty)?;
                record.returns.insert(return_id.clone(), qty);
            }
            Ok(record)
        })
    }

    fn forget_return(return_id: String, id: String) -> Result<CatalogGoods, StockError> {
        change_stock(&id, |mut record| {
            record.returns.remove(&return_id);
            Ok(record)
        })
    }
}
