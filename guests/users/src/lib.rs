//! The users service: the shop's customers.
//!
//! HTTP (mounted at `/users`): `POST /` creates, `GET /` lists, `GET /{id}` reads,
//! `PATCH /{id}` changes name, address or phone, `DELETE /{id}` removes.
//! Other services use the typed `switchyard:shop/directory` interface.

use guest_common::store::{StoreError, Table, next_id};
use guest_common::{Outcome, Reply, parse_body, require_text, segments};
use serde::{Deserialize, Serialize};

guest_common::service_bindings!("switchyard:shop/users");

use exports::switchyard::platform::handler::Request;
use exports::switchyard::shop::directory::{Guest as Directory, User as DirectoryUser};

/// Fewest and most digits a phone number can have (E.164 allows up to 15).
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

#[derive(Serialize, Deserialize)]
struct User {
    id: String,
    name: String,
    address: String,
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    address: String,
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    name: Option<String>,
    address: Option<String>,
    phone: Option<String>,
}

fn users_table() -> Result<Table, StoreError> {
    Table::open("users")
}

/// A plausible phone number: digits, optionally a leading `+`, with spaces,
/// dashes, dots or parentheses as separators; 7 to 15 digits in all.
fn require_phone(phone: &str) -> Result<String, Reply> {
    let phone = phone.trim();
    let body = phone.strip_prefix('+').unwrap_or(phone);
    let allowed = body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
    let digits = body.chars().filter(char::is_ascii_digit).count();
    if allowed && PHONE_DIGITS.contains(&digits) {
        Ok(phone.to_string())
    } else {
        Err(Reply::error(
            400,
            format!(
                "phone {phone:?} is not a plausible phone number: use 7 to 15 digits, an \
                 optional leading +, and spaces, dashes, dots or parentheses between them"
            ),
        ))
    }
}

struct Service;

guest_common::http_handler!(Service, route);

fn route(request: &Request) -> Outcome {
    let method = request.method.as_str();
    match segments(&request.path).as_slice() {
        [] => match method {
            "GET" => Ok(Reply::json(200, &users_table()?.all::<User>()?)),
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
            "DELETE" => remove(id),
            _ => Err(Reply::method_not_allowed(
                method,
                &request.path,
                "GET, PATCH, DELETE",
            )),
        },
        _ => Err(Reply::route_not_found(method, &request.path)),
    }
}

fn create(body: &[u8]) -> Outcome {
    let new: NewUser = parse_body(body)?;
    let name = require_text("name", &new.name)?;
    let address = require_text("address", &new.address)?;
    let phone = require_phone(&new.phone)?;
    let user = User {
        id: next_id("u")?,
        name,
        address,
        phone,
    };
    users_table()?.insert(&user.id, &user)?;
    Ok(Reply::json(201, &user))
}

fn read(id: &str) -> Outcome {
    match users_table()?.get::<User>(id)? {
        Some(user) => Ok(Reply::json(200, &user)),
        None => Err(Reply::not_found("user", id)),
    }
}

fn change(id: &str, body: &[u8]) -> Outcome {
    let change: UserChange = parse_body(body)?;
    if change.name.is_none() && change.address.is_none() && change.phone.is_none() {
        return Err(Reply::error(
            400,
            "nothing to change: give name, address and/or phone",
        ));
    }
    let name = change
        .name
        .as_deref()
        .map(|v| require_text("name", v))
        .transpose()?;
    let address = change
        .address
        .as_deref()
        .map(|v| require_text("address", v))
        .transpose()?;
    let phone = change.phone.as_deref().map(require_phone).transpose()?;
    let updated = users_table()?.update(id, |mut user: User| {
        user.name = name.clone().unwrap_or(user.name);
        user.address = address.clone().unwrap_or(user.address);
        user.phone = phone.clone().unwrap_or(user.phone);
        Ok::<_, Reply>(user)
    })?;
    match updated {
        Some(user) => Ok(Reply::json(200, &user)),
        None => Err(Reply::not_found("user", id)),
    }
}

fn remove(id: &str) -> Outcome {
    if users_table()?.delete(id)? {
        Ok(Reply::no_content())
    } else {
        Err(Reply::not_found("user", id))
    }
}

// === impl Directory ===

fn lookup(id: &str) -> Option<User> {
    users_table().ok()?.get::<User>(id).ok().flatten()
}

impl Directory for Service {
    fn get(id: String) -> Option<DirectoryUser> {
        lookup(&id).map(|u| DirectoryUser {
            id: u.id,
            name: u.name,
            address: u.address,
            phone: u.phone,
        })
    }

    fn exists(id: String) -> bool {
        lookup(&id).is_some()
    }
}

export!(Service);

#[cfg(test)]
mod tests {
    use super::require_phone;

    #[test]
    fn plausible_phone_numbers_pass() {
        for ok in [
            "+1 555 0100",
            "(030) 1234-567",
            "555.123.4567",
            "+442071838750",
        ] {
            assert!(require_phone(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "12345",
            "call me",
            "+1 555 0100 ext 7",
            "++15550100",
            "1234567890123456",
        ] {
            assert!(require_phone(bad).is_err(), "{bad}");
        }
    }
}
