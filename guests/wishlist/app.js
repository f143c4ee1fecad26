// The wishlist service, in JavaScript: each user's wishes, kept in the
// key-value store, each checked through the catalog interface (the goods
// service) to be of goods that exist.
//
//   PUT    /wishlist/{user}/{goods_id}  -> 200, the list
//   DELETE /wishlist/{user}/{goods_id}  -> 200, the list
//   GET    /wishlist/{user}             -> the goods as the catalog has them now
//   GET    /wishlist/                   -> {"service": "wishlist"}
//
// Built with componentize-qjs for the world switchyard:shop/wishlist (see
// wit/shop/worlds.wit); `make` builds it into services/wishlist/.

import { get } from 'switchyard:shop/catalog@1.0.0';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';

// QuickJS has no TextEncoder: UTF-8 by hand (only text this service wrote
// itself is ever decoded).
function encodeUtf8(text) {
  const bytes = [];
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (c < 0x80) {
      bytes.push(c);
    } else if (c < 0x800) {
      bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    } else if (c < 0x10000) {
      bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    } else {
      bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
  }
  return new Uint8Array(bytes);
}

function decodeUtf8(bytes) {
  let text = '';
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    const n = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
    let c = n === 1 ? b : b & (0xff >> (n + 1));
    for (let k = 1; k < n; k++) {
      c = (c << 6) | (bytes[i + k] & 63);
    }
    text += String.fromCodePoint(c);
    i += n;
  }
  return text;
}

function reply(status, value) {
  return {
    status,
    headers: [['content-type', 'application/json']],
    body: encodeUtf8(JSON.stringify(value)),
  };
}

function refuse(status, message) {
  return reply(status, { error: message });
}

function wishes(bucket, user) {
  const stored = bucket.get(user);
  // An absent option is null (undefined in some toolchains): == covers both.
  return stored == null ? [] : JSON.parse(decodeUtf8(stored));
}

function save(bucket, user, list) {
  bucket.set(user, encodeUtf8(JSON.stringify(list)));
  return reply(200, { user, goods: list });
}

function route(request) {
  const parts = request.path.split('/').filter((p) => p.length > 0);
  if (parts.length === 0 && request.method === 'GET') {
    return reply(200, { service: 'wishlist' });
  }
  const bucket = open('wishlists');
  if (parts.length === 1 && request.method === 'GET') {
    const user = parts[0];
    const goods = wishes(bucket, user)
      .map((id) => get(id))
      .filter((g) => g != null)
      .map((g) => ({ id: g.id, name: g.name, price_cents: Number(g.priceCents), stock: g.stock }));
    return reply(200, { user, goods });
  }
  if (parts.length === 2 && request.method === 'PUT') {
    const [user, id] = parts;
    if (get(id) == null) {
      return refuse(422, `no goods with id ${JSON.stringify(id)}`);
    }
    const list = wishes(bucket, user);
    return save(bucket, user, list.includes(id) ? list : [...list, id]);
  }
  if (parts.length === 2 && request.method === 'DELETE') {
    const [user, id] = parts;
    return save(bucket, user, wishes(bucket, user).filter((w) => w !== id));
  }
  if (parts.length === 1 || parts.length === 2) {
    const allowed = parts.length === 1 ? 'GET' : 'PUT, DELETE';
    return refuse(405, `${request.method} is not allowed on ${request.path}; allowed: ${allowed}`);
  }
  return refuse(404, `no route for ${request.method} ${request.path}`);
}

export const handler = {
  handle(request) {
    return route(request);
  },
};
