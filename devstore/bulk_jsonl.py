"""Write devstore tables as Shopify bulk-operation JSONL (customers; orders with line items).

The shape is that of a bulk export run with the fragments in
``pipelines/shopify/queries/customers.fields.graphql`` and ``orders.fields.graphql``:
camelCase keys, ``gid://shopify/<Type>/<id>`` ids, nested objects and plain lists inline,
money as ``{"shopMoney": {...}, "presentmentMoney": {...}}``, and connection children
(order line items) as lines of their own carrying ``__parentId``, each right after its
parent.

Lines are assembled with Polars string expressions (not per-row ``json.dumps``) and
written in chunks, which keeps millions of orders within seconds and bounded memory.
String values are JSON-escaped only when a chunk's column holds a character that needs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl

from devstore import model

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
_PLAIN_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"

# A piece of a JSON line: literal text, a value expression, or a list of pieces.
Part = pl.Expr | str | list


# ---------------------------------------------------------------------------------------
# JSON value expressions


def _escape(col: pl.Expr) -> pl.Expr:
    """JSON string escaping for a String expression (backslash, quote, control chars)."""
    return (
        col.str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
        .str.replace_all("\r", "\\r", literal=True)
        .str.replace_all("\t", "\\t", literal=True)
    )


def _rare_control(value: str) -> str:
    """Escape what ``_escape`` leaves (other C0 controls) exactly as ``json.dumps`` would."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


# Columns whose values come from Shopify enums, ISO codes, or our own formatting (money,
# timestamps, E.164): they never hold characters that need escaping, so skip the scan.
_SAFE_COLUMNS = frozenset(
    {
        "shop", "currency_code", "presentment_currency_code", "financial_status", "fulfillment_status",
        "cancel_reason", "billing_country_code", "country_code", "province_code", "state", "locale",
        "email_consent_state", "email_consent_opt_in_level", "sms_consent_state", "sms_consent_opt_in_level",
        "sms_consent_collected_from", "n", "spent", "shop_currency", "refunds_json", "a",
        *(c for c in model.ORDERS if c.startswith("total_") or c.startswith("subtotal_")),
        "original_unit_price", "original_unit_price_presentment", "discounted_total",
        "discounted_total_presentment",
    }
)  # fmt: skip


class _Frame:
    """A chunk of rows plus the knowledge of which string columns need escaping."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame
        self._escape: dict[str, int] = {}

    def escape_level(self, name: str) -> int:
        """0: no escaping needed; 1: simple escapes; 2: rare control characters too."""
        if name in _SAFE_COLUMNS:
            return 0
        if name not in self._escape:
            col = self.frame[name]
            if col.dtype != pl.String or not bool(col.str.contains(_NEEDS_ESCAPE).any()):
                self._escape[name] = 0
            else:
                self._escape[name] = 2 if bool(col.str.contains(_PLAIN_CONTROL).any()) else 1
        return self._escape[name]

    def text(self, name: str) -> pl.Expr:
        """The column's value as JSON string contents (no quotes), escaped as needed."""
        level = self.escape_level(name)
        col = pl.col(name)
        if level == 2:
            return col.map_elements(_rare_control, return_dtype=pl.String)
        return _escape(col) if level == 1 else col

    def _quoted(self, name: str, value: pl.Expr) -> Part:
        # Without nulls the quotes go straight into the line (no intermediate string).
        if self.frame[name].null_count() == 0:
            return ['"', value, '"']
        return pl.concat_str([pl.lit('"'), value, pl.lit('"')]).fill_null(pl.lit("null"))

    def string(self, name: str) -> Part:
        """A JSON string literal, or ``null``."""
        return self._quoted(name, self.text(name))

    def time(self, name: str) -> Part:
        """A timestamp as Shopify's DateTime string, or ``null``."""
        return self._quoted(name, pl.col(name).dt.strftime(DATETIME_FORMAT))


def _json_bool(col: str) -> pl.Expr:
    return pl.when(pl.col(col)).then(pl.lit("true")).otherwise(pl.lit("false"))


def _gid(kind: str, col: str, suffix: str = "") -> Part:
    return [f'"gid://shopify/{kind}/', pl.col(col).cast(pl.String), f'{suffix}"']


def _nullable_object(present: pl.Expr, parts: list[Part]) -> pl.Expr:
    """``{...}`` built from ``parts`` where ``present``, else ``null``."""
    return pl.when(present).then(_concat(parts)).otherwise(pl.lit("null"))


def _flatten(parts: Iterable[Part]) -> Iterable[pl.Expr | str]:
    for part in parts:
        if isinstance(part, list):
            yield from _flatten(part)
        else:
            yield part


def _concat(parts: Iterable[Part]) -> pl.Expr:
    """Concatenate literal JSON text (str) and value expressions into one line."""
    merged: list[Part] = []
    for part in _flatten(parts):
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + part
        else:
            merged.append(part)
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in merged])


def _money_set(amount: str, currency: str, amount_p: str, currency_p: str) -> list[Part]:
    """``{"shopMoney":{...},"presentmentMoney":{...}}`` (amounts are already 2-dp strings)."""
    return [
        '{"shopMoney":{"amount":"',
        pl.col(amount),
        '","currencyCode":"',
        pl.col(currency),
        '"},"presentmentMoney":{"amount":"',
        pl.col(amount_p),
        '","currencyCode":"',
        pl.col(currency_p),
        '"}}',
    ]


def _string_list(f: _Frame, col: str) -> pl.Expr:
    """A list of strings as a JSON array."""
    escaped = (
        _escape(pl.element()) if f.frame[col].explode().str.contains(_NEEDS_ESCAPE).any() else pl.element()
    )
    quoted = pl.col(col).list.eval(pl.concat_str([pl.lit('"'), escaped, pl.lit('"')])).list.join(",")
    return pl.concat_str([pl.lit("["), quoted.fill_null(""), pl.lit("]")])


def _write_lines(handle: IO[bytes], lines: pl.Series) -> None:
    """Write one JSON document per line (no quoting: the strings are JSON already)."""
    if lines.len():
        pl.DataFrame({"l": lines}).write_csv(handle, include_header=False, quote_style="never")


def _chunks(height: int, size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, height, size):
        yield start, min(size, height - start)


def _cents(col: str) -> pl.Expr:
    """A 2-dp money string as integer cents."""
    return pl.col(col).str.replace(".", "", literal=True).cast(pl.Int64)


# ---------------------------------------------------------------------------------------
# customers


def _address_json(f: _Frame) -> pl.Expr:
    fields = [
        ("firstName", "first_name"),
        ("lastName", "last_name"),
        ("company", "company"),
        ("address1", "address1"),
        ("address2", "address2"),
        ("city", "city"),
        ("province", "province"),
        ("provinceCode", "province_code"),
        ("zip", "zip"),
        ("country", "country"),
        ("countryCodeV2", "country_code"),
        ("phone", "phone"),
    ]
    parts: list[Part] = ['{"id":', _gid("MailingAddress", "id", "?model_name=CustomerAddress")]
    for key, col in fields:
        parts += [f',"{key}":', f.string(col)]
    parts.append("}")
    return _concat(parts)


def _customer_frame(tables: dict[str, pl.DataFrame], shop: str) -> pl.DataFrame:
    """One shop's customers joined with their address book and lifetime order figures."""
    customers = model.conform("customers", tables["customers"]).filter(pl.col("shop") == shop)
    currency = tables["shops"].filter(pl.col("shop") == shop)["currency_code"]
    currency_code = currency[0] if currency.len() else "USD"
    addresses = model.conform("customer_addresses", tables["customer_addresses"]).filter(
        pl.col("shop") == shop
    )
    fa = _Frame(addresses)
    books = (
        addresses.select("customer_id", "id", a=_address_json(fa))
        .sort("customer_id", "id")
        .group_by("customer_id", maintain_order=True)
        .agg(pl.col("a").str.join(","))
    )
    orders = (
        model.conform("orders", tables["orders"])
        .select("shop", "customer_id", "test", "total_price", "total_refunded")
        .filter((pl.col("shop") == shop) & pl.col("customer_id").is_not_null())
    )
    # Lifetime figures as Shopify reports them: non-test orders, net of refunds.
    spend = (
        orders.filter(~pl.col("test"))
        .group_by("customer_id")
        .agg(n=pl.len(), spent=(_cents("total_price") - _cents("total_refunded")).sum())
    )
    frame = (
        customers.join(books, left_on="id", right_on="customer_id", how="left", maintain_order="left")
        .join(spend, left_on="id", right_on="customer_id", how="left", maintain_order="left")
        .with_columns(
            n=pl.col("n").fill_null(0).cast(pl.String),
            shop_currency=pl.lit(currency_code),
            spent=pl.col("spent").fill_null(0),
            display=pl.concat_str(
                [pl.col("first_name").str.strip_chars(), pl.col("last_name").str.strip_chars()],
                separator=" ",
                ignore_nulls=True,
            ),
        )
        .with_columns(
            display=pl.when(pl.col("display") != "")
            .then(pl.col("display"))
            .otherwise(pl.coalesce(pl.col("email").str.strip_chars(), pl.col("phone"), pl.lit(""))),
            spent=pl.concat_str(
                [
                    (pl.col("spent") // 100).cast(pl.String),
                    pl.lit("."),
                    (pl.col("spent") % 100).cast(pl.String).str.zfill(2),
                ]
            ),
        )
    )
    return frame


def _customer_line(f: _Frame) -> pl.Expr:
    has_email = pl.col("email").is_not_null()
    has_phone = pl.col("phone").is_not_null()
    parts: list[Part] = [
        '{"id":',
        _gid("Customer", "id"),
        ',"legacyResourceId":"',
        pl.col("id").cast(pl.String),
        '","firstName":',
        f.string("first_name"),
        ',"lastName":',
        f.string("last_name"),
        ',"displayName":',
        f.string("display"),
        ',"defaultEmailAddress":',
        _nullable_object(
            has_email,
            [
                '{"emailAddress":',
                f.string("email"),
                ',"marketingState":',
                f.string("email_consent_state"),
                ',"marketingOptInLevel":',
                f.string("email_consent_opt_in_level"),
                ',"marketingUpdatedAt":',
                f.time("email_consent_updated_at"),
                "}",
            ],
        ),
        ',"defaultPhoneNumber":',
        _nullable_object(
            has_phone,
            [
                '{"phoneNumber":',
                f.string("phone"),
                ',"smsMarketingConsent":{"state":"',
                # CustomerMarketingConsentState: NEVER_SUBSCRIBED where the old enum said NOT_SUBSCRIBED
                pl.col("sms_consent_state")
                .replace("NOT_SUBSCRIBED", "NEVER_SUBSCRIBED")
                .fill_null("NEVER_SUBSCRIBED"),
                '"',
                ',"optInLevel":',
                f.string("sms_consent_opt_in_level"),
                ',"updatedAt":',
                f.time("sms_consent_updated_at"),
                ',"collectedFrom":',
                f.string("sms_consent_collected_from"),
                "}}",
            ],
        ),
        ',"tags":',
        _string_list(f, "tags"),
        ',"note":',
        f.string("note"),
        ',"state":',
        f.string("state"),
        ',"verifiedEmail":',
        _json_bool("verified_email"),
        ',"taxExempt":',
        _json_bool("tax_exempt"),
        ',"locale":',
        f.string("locale"),
        ',"numberOfOrders":"',
        pl.col("n"),
        '","amountSpent":{"amount":"',
        pl.col("spent"),
        '","currencyCode":"',
        pl.col("shop_currency"),
        '"},"defaultAddress":',
        _nullable_object(
            pl.col("default_address_id").is_not_null(),
            ['{"id":', _gid("MailingAddress", "default_address_id", "?model_name=CustomerAddress"), "}"],
        ),
        ',"addresses":[',
        pl.col("a").fill_null(""),
        '],"createdAt":',
        f.time("created_at"),
        ',"updatedAt":',
        f.time("updated_at"),
        "}",
    ]
    return _concat(parts)


def _render(frame: pl.DataFrame, line: Callable[[_Frame], pl.Expr], pieces: int = 2) -> list[pl.LazyFrame]:
    """Lazy queries rendering ``frame``'s rows as lines, split so Polars runs them in parallel."""
    expr = line(_Frame(frame))
    step = max(1, -(-frame.height // pieces))
    return [
        frame.lazy().slice(start, step).select(line=expr) for start in range(0, max(frame.height, 1), step)
    ]


def customer_lines(tables: dict[str, pl.DataFrame], shop: str) -> pl.Series:
    """The bulk-export lines of one shop's customers (one JSON document per customer)."""
    frames = pl.collect_all(_render(_customer_frame(tables, shop), _customer_line))
    return pl.concat([f["line"] for f in frames])


def write_customers_jsonl(
    tables: dict[str, pl.DataFrame], path: str | Path | IO[bytes], shop: str, *, chunk_rows: int = 50_000
) -> int:
    """Write ``shop``'s customers as a bulk-export JSONL file; returns the number of lines."""
    frame = _customer_frame(tables, shop)
    with _open(path) as handle:
        for start, length in _chunks(frame.height, chunk_rows):
            for part in pl.collect_all(_render(frame.slice(start, length), _customer_line)):
                _write_lines(handle, part["line"])
    return frame.height


# ---------------------------------------------------------------------------------------
# orders and line items

_MONEY_FIELDS = [
    ("subtotalPriceSet", "subtotal_price"),
    ("totalPriceSet", "total_price"),
    ("totalTaxSet", "total_tax"),
    ("totalDiscountsSet", "total_discounts"),
    ("totalShippingPriceSet", "total_shipping_price"),
    ("totalRefundedSet", "total_refunded"),
]


def _order_line(f: _Frame) -> pl.Expr:
    parts: list[Part] = [
        '{"id":',
        _gid("Order", "id"),
        ',"legacyResourceId":"',
        pl.col("id").cast(pl.String),
        '","name":',
        f.string("name"),
        ',"email":',
        f.string("email"),
        ',"phone":',
        f.string("phone"),
        ',"test":',
        _json_bool("test"),
        ',"customer":',
        _nullable_object(
            pl.col("customer_id").is_not_null(), ['{"id":', _gid("Customer", "customer_id"), "}"]
        ),
        ',"currencyCode":"',
        pl.col("currency_code"),
        '","presentmentCurrencyCode":"',
        pl.col("presentment_currency_code"),
        '"',
    ]
    for key, col in _MONEY_FIELDS:
        parts += [
            f',"{key}":',
            *_money_set(col, "currency_code", f"{col}_presentment", "presentment_currency_code"),
        ]
    parts += [
        ',"displayFinancialStatus":',
        f.string("financial_status"),
        ',"displayFulfillmentStatus":',
        f.string("fulfillment_status"),
        ',"cancelledAt":',
        f.time("cancelled_at"),
        ',"cancelReason":',
        f.string("cancel_reason"),
        ',"closedAt":',
        f.time("closed_at"),
        ',"processedAt":',
        f.time("processed_at"),
        ',"createdAt":',
        f.time("created_at"),
        ',"updatedAt":',
        f.time("updated_at"),
        ',"tags":',
        _string_list(f, "tags"),
        ',"sourceName":',
        f.string("source_name"),
        ',"billingAddress":',
        _nullable_object(
            pl.any_horizontal(
                pl.col(
                    "billing_first_name", "billing_last_name", "billing_address1", "billing_city"
                ).is_not_null()
            ),
            [
                '{"firstName":',
                f.string("billing_first_name"),
                ',"lastName":',
                f.string("billing_last_name"),
                ',"address1":',
                f.string("billing_address1"),
                ',"address2":',
                f.string("billing_address2"),
                ',"city":',
                f.string("billing_city"),
                ',"province":',
                f.string("billing_province"),
                ',"zip":',
                f.string("billing_zip"),
                ',"countryCodeV2":',
                f.string("billing_country_code"),
                ',"phone":',
                f.string("billing_phone"),
                "}",
            ],
        ),
        ',"refunds":[',
        pl.col("refunds_json").fill_null(""),
        "]}",
    ]
    return _concat(parts)


def _refund_json(f: _Frame) -> pl.Expr:
    return _concat(
        [
            '{"id":',
            _gid("Refund", "id"),
            ',"createdAt":',
            f.time("created_at"),
            ',"note":',
            f.string("note"),
            ',"totalRefundedSet":',
            *_money_set(
                "total_refunded", "currency_code", "total_refunded_presentment", "presentment_currency_code"
            ),
            "}",
        ]
    )


def _line_item_line(f: _Frame) -> pl.Expr:
    return _concat(
        [
            '{"id":',
            _gid("LineItem", "id"),
            ',"title":',
            f.string("title"),
            ',"sku":',
            f.string("sku"),
            ',"quantity":',
            pl.col("quantity").cast(pl.String),
            ',"product":',
            _nullable_object(
                pl.col("product_id").is_not_null(), ['{"id":', _gid("Product", "product_id"), "}"]
            ),
            ',"variant":',
            _nullable_object(
                pl.col("variant_id").is_not_null(), ['{"id":', _gid("ProductVariant", "variant_id"), "}"]
            ),
            ',"originalUnitPriceSet":',
            *_money_set(
                "original_unit_price",
                "currency_code",
                "original_unit_price_presentment",
                "presentment_currency_code",
            ),
            ',"discountedTotalSet":',
            *_money_set(
                "discounted_total",
                "currency_code",
                "discounted_total_presentment",
                "presentment_currency_code",
            ),
            ',"__parentId":',
            _gid("Order", "order_id"),
            "}",
        ]
    )


class _open:
    """Open a path for binary writing, or pass an already open handle through."""

    def __init__(self, target: str | Path | IO[bytes]) -> None:
        self.target = target
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if isinstance(self.target, str | Path):
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.target, "wb")
            return self.handle
        return self.target

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def write_orders_jsonl(
    tables: dict[str, pl.DataFrame],
    path: str | Path | IO[bytes],
    shop: str,
    *,
    chunk_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``shop``'s orders (refunds inline, line items as child lines) as bulk JSONL.

    Each order's line items follow it directly, each with ``__parentId`` set to the
    order's gid. Returns the number of lines written (orders + line items).
    """
    # Rows are gathered chunk by chunk (never the whole shop at once) to bound memory.
    orders = model.conform("orders", tables["orders"])
    order_rows = np.flatnonzero((orders["shop"] == shop).to_numpy())
    index = orders.select(order_id="id", cur="currency_code", pcur="presentment_currency_code")[
        order_rows
    ].with_columns(pos=pl.int_range(pl.len(), dtype=pl.Int64))
    lines = model.conform("order_line_items", tables["order_line_items"])
    # Each line item's order position within this shop (null for other shops' lines).
    line_pos_all = lines.select("order_id").join(
        index.select("order_id", "pos"), on="order_id", how="left", maintain_order="left"
    )["pos"]
    line_rows = np.flatnonzero(line_pos_all.is_not_null().to_numpy())
    line_pos = line_pos_all.to_numpy()[line_rows].astype(np.int64)
    del line_pos_all
    # The generator emits line items in order; other sources may not.
    if len(line_pos) and np.any(line_pos[1:] < line_pos[:-1]):
        order = np.argsort(line_pos, kind="stable")
        line_rows, line_pos = line_rows[order], line_pos[order]
    refunds = (
        model.conform("refunds", tables["refunds"])
        .filter(pl.col("shop") == shop)
        .join(index, on="order_id", how="inner")
        .rename({"cur": "currency_code", "pcur": "presentment_currency_code"})
        .sort("order_id", "created_at", "id")
    )
    refunds_json = (
        refunds.select("order_id", r=_refund_json(_Frame(refunds)))
        .group_by("order_id", maintain_order=True)
        .agg(pl.col("r").str.join(","))
        .rename({"r": "refunds_json"})
    )
    # Position of each order's refunds (null when none), so chunks gather instead of join.
    refund_at = index.select("order_id").join(
        refunds_json.select("order_id", at=pl.int_range(pl.len(), dtype=pl.Int64)),
        on="order_id",
        how="left",
        maintain_order="left",
    )["at"]
    written = 0
    with _open(path) as handle:
        for start, length in _chunks(len(order_rows), chunk_rows):
            chunk = orders[order_rows[start : start + length]].with_columns(
                refunds_json=refunds_json["refunds_json"].gather(refund_at.slice(start, length))
            )
            lo, hi = np.searchsorted(line_pos, [start, start + length])
            li_order = line_pos[lo:hi] - start
            li = lines[line_rows[lo:hi]].with_columns(
                currency_code=chunk["currency_code"].gather(pl.Series(li_order)),
                presentment_currency_code=chunk["presentment_currency_code"].gather(pl.Series(li_order)),
            )
            # Orders cost ~4x a line item per row: two order halves and the items in parallel.
            rendered = pl.collect_all([*_render(chunk, _order_line), *_render(li, _line_item_line, pieces=1)])
            order_text = pl.concat([r["line"] for r in rendered[:-1]])
            li_text = rendered[-1]["line"]
            # Interleave: order i goes after all lines of orders < i; its lines follow it.
            per_order = np.bincount(li_order, minlength=length)
            before = np.r_[0, np.cumsum(per_order)[:-1]]
            order_at = np.arange(length) + before
            rank = np.arange(len(li_order)) - before[li_order]
            li_at = order_at[li_order] + 1 + rank
            target = np.empty(length + len(li_order), dtype=np.int64)
            target[order_at] = np.arange(length)
            target[li_at] = length + np.arange(len(li_order))
            combined = pl.concat([order_text, li_text]).gather(pl.Series(target))
            _write_lines(handle, combined)
            written += combined.len()
            if progress is not None:
                progress(written)
    return written


def read_jsonl(path: str | Path) -> list[dict[str, object]]:
    """Parse a JSONL file into dicts (small files; for tests and debugging)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
