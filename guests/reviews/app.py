"""The reviews service, in Python: reviews of goods, kept in the key-value
store, each checked through the catalog interface (the goods service) to be
of goods that exist.

    POST /reviews/{goods_id}  {"rating": 1..5, "text": "..."}  -> 201
    GET  /reviews/{goods_id}  -> {"goods_id", "reviews": [...], "average"}
    GET  /reviews/            -> {"service": "reviews"}

Built with componentize-py for the world switchyard:shop/reviews (see
wit/shop/worlds.wit); `make` builds it into services/reviews/.
"""

import json

from wit_world import exports
from wit_world.exports.handler import Request, Response
from wit_world.imports import atomics, catalog, wasi_keyvalue_store

MAX_TEXT = 2000


def reply(status, value):
    body = json.dumps(value).encode()
    return Response(status, [("content-type", "application/json")], body)


def refuse(status, message):
    return reply(status, {"error": message})


def add(goods_id, body):
    try:
        review = json.loads(body or b"null")
    except ValueError as e:
        return refuse(400, f"invalid JSON body: {e}")
    if not isinstance(review, dict):
        return refuse(400, "the request body must be a JSON object")
    unknown = sorted(set(review) - {"rating", "text"})
    if unknown:
        return refuse(400, f"unknown field {unknown[0]!r}: expected rating and text")
    rating, text = review.get("rating"), review.get("text", "")
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        return refuse(400, "rating must be a whole number from 1 to 5")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return refuse(400, f"text must be a string of at most {MAX_TEXT} characters")
    if catalog.get(goods_id) is None:
        return refuse(422, f"no goods with id {goods_id!r}")
    bucket = wasi_keyvalue_store.open("reviews")
    number = atomics.increment(bucket, f"count/{goods_id}", 1)
    stored = {"id": number, "goods_id": goods_id, "rating": rating, "text": text}
    bucket.set(f"review/{goods_id}/{number}", json.dumps(stored).encode())
    return reply(201, stored)


def show(goods_id):
    bucket = wasi_keyvalue_store.open("reviews")
    count = bucket.get(f"count/{goods_id}")
    reviews = []
    # Counters are stored as decimal text.
    total = int(count.decode()) if count else 0
    for number in range(1, total + 1):
        stored = bucket.get(f"review/{goods_id}/{number}")
        if stored is not None:
            reviews.append(json.loads(stored))
    average = sum(r["rating"] for r in reviews) / len(reviews) if reviews else None
    return reply(200, {"goods_id": goods_id, "reviews": reviews, "average": average})


class Handler(exports.Handler):
    def handle(self, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        if not parts and request.method == "GET":
            return reply(200, {"service": "reviews"})
        if len(parts) != 1:
            return refuse(404, f"no route for {request.method} {request.path}")
        if request.method == "POST":
            return add(parts[0], request.body)
        if request.method == "GET":
            return show(parts[0])
        return refuse(405, f"{request.method} is not allowed on {request.path}; allowed: GET, POST")
