//! JSON records in `wasi:keyvalue` buckets, with the read-modify-write loop every
//! service needs: read, change, compare-and-swap, retry on a concurrent write. The
//! host namespaces buckets per service, so a bucket name only has to be unique
//! within one service.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Reply;
use crate::bindings::switchyard::platform::keyvalue_cas::compare_and_swap;
use crate::bindings::wasi::keyvalue::atomics::increment;
use crate::bindings::wasi::keyvalue::store::{Bucket, Error, open};

/// The store failed, or held something that is not a record of the expected shape.
#[derive(Debug)]
pub struct StoreError(pub String);

impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        StoreError(match e {
            Error::NoSuchStore => "no such store".into(),
            Error::AccessDenied => "access denied".into(),
            Error::Other(message) => message,
        })
    }
}

impl From<StoreError> for Reply {
    fn from(e: StoreError) -> Reply {
        Reply::error(503, format!("storage unavailable: {}", e.0))
    }
}

/// One bucket of JSON records keyed by id.
pub struct Table {
    bucket: Rc<Bucket>,
}

thread_local! {
    /// The buckets this instance has opened, by name. An instance serves
    /// call after call, and a bucket handle stays good for its life: opening
    /// once saves every later call two calls into the host (open, drop).
    static OPEN: RefCell<HashMap<String, Rc<Bucket>>> = RefCell::new(HashMap::new());
}

impl Table {
    pub fn open(name: &str) -> Result<Table, StoreError> {
        let open_before = OPEN.with_borrow(|buckets| buckets.get(name).cloned());
        let bucket = match open_before {
            Some(bucket) => bucket,
            None => {
                let bucket = Rc::new(open(name)?);
                OPEN.with_borrow_mut(|buckets| buckets.insert(name.to_string(), bucket.clone()));
                bucket
            }
        };
        Ok(Table { bucket })
    }

    /// The record under `key`, if any.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.bucket.get(key)? {
            None => Ok(None),
            Some(bytes) => decode(key, &bytes).map(Some),
        }
    }

    /// Store a new record under `key`; fails if the key is already taken.
    pub fn insert<T: Serialize>(&self, key: &str, record: &T) -> Result<(), StoreError> {
        if self.insert_new(key, record)? {
            Ok(())
        } else {
            Err(StoreError(format!("key {key:?} is already taken")))
        }
    }

    /// Store a new record under `key` unless the key is taken; whether it was
    /// stored. Unlike [`Table::insert`], a taken key is an answer, not an error.
    pub fn insert_new<T: Serialize>(&self, key: &str, record: &T) -> Result<bool, StoreError> {
        Ok(compare_and_swap(&self.bucket, key, None, &encode(record)?)?)
    }

    /// Atomically replace the record under `key` with `change(record)`, retrying
    /// when another instance wrote it in between. `Ok(None)` when there is no such
    /// record; an error from `change` aborts without writing.
    pub fn update<T, E>(
        &self,
        key: &str,
        mut change: impl FnMut(T) -> Result<T, E>,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError>,
    {
        loop {
            let Some(current) = self.bucket.get(key).map_err(StoreError::from)? else {
                return Ok(None);
            };
            let changed = change(decode(key, &current)?)?;
            let new = encode(&changed)?;
            if compare_and_swap(&self.bucket, key, Some(&current), &new)
                .map_err(StoreError::from)?
            {
                return Ok(Some(changed));
            }
        }
    }

    /// Remove `key`; returns whether it was there.
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.bucket.exists(key)?;
        self.bucket.delete(key)?;
        Ok(existed)
    }

    /// Every key of the bucket, following the store's cursor across pages.
    pub fn keys(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Every record, in id creation order (see [`crate::id_order`]).
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        self.page(0, usize::MAX)
    }

    /// The records from the `offset`-th to `limit` further, in id creation
    /// order: the keys are listed (a page of keys per round trip), but only
    /// the records on the page are read, so a page costs its own size, not
    /// the table's.
    pub fn page<T: DeserializeOwned>(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        let mut keys = self.keys()?;
        keys.sort_by(|a, b| crate::id_order(a).cmp(&crate::id_order(b)));
        let on_page: Vec<String> = keys.into_iter().skip(offset).take(limit).collect();
        let mut records = Vec::with_capacity(on_page.len());
        for key in on_page {
            // A record deleted since the listing is simply not part of the answer.
            if let Some(record) = self.get(&key)? {
                records.push(record);
            }
        }
        Ok(records)
    }
}

/// A fresh id: `prefix` followed by a per-service counter that never repeats.
pub fn next_id(prefix: &str) -> Result<String, StoreError> {
    let counters = open("counters")?;
    let n = increment(&counters, prefix, 1)?;
    Ok(crate::make_id(prefix, n))
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError(format!("cannot encode a record: {e}")))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError(format!("record {key:?} is not readable: {e}")))
}
