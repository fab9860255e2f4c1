-- Orders and their lines, on the customer's logical shard (an order's id is
-- nextflow_id(shard of customer_id); a line's id carries its order's shard).
-- Totals are computed by the service (deployments/sales/totals.py), never sent by
-- clients; lines snapshot the product's sku, name and price when priced.
CREATE TABLE orders (
    id             bigint PRIMARY KEY,
    customer_id    bigint NOT NULL,
    deal_id        bigint REFERENCES deals (id),
    price_book_id  bigint NOT NULL,
    currency       char(3) NOT NULL,
    status         text NOT NULL DEFAULT 'draft'
                   CHECK (status IN ('draft', 'confirmed', 'cancelled')),
    notes          text,
    owner_id       bigint,
    subtotal       numeric NOT NULL,
    discount_total numeric NOT NULL,
    tax_total      numeric NOT NULL,
    total          numeric NOT NULL,
    confirmed_at   timestamptz,
    cancelled_at   timestamptz,
    version        integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
-- One live order per won deal (a second POST /deals/{id}/order is a 409).
CREATE UNIQUE INDEX orders_one_per_deal ON orders (deal_id)
    WHERE deal_id IS NOT NULL AND status <> 'cancelled' AND deleted_at IS NULL;
CREATE INDEX orders_by_deal_id ON orders (deal_id);
CREATE INDEX orders_by_created ON orders (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX orders_by_total ON orders (total, id) WHERE deleted_at IS NULL;
CREATE INDEX orders_by_customer ON orders (customer_id, created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE order_lines (
    id               bigint PRIMARY KEY,
    order_id         bigint NOT NULL REFERENCES orders (id),
    position         integer NOT NULL,
    product_id       bigint NOT NULL,
    sku              text NOT NULL,
    name             text NOT NULL,
    unit_price       numeric NOT NULL CHECK (unit_price >= 0),
    quantity         numeric NOT NULL CHECK (quantity > 0),
    discount_percent numeric NOT NULL CHECK (discount_percent BETWEEN 0 AND 100),
    tax_percent      numeric NOT NULL CHECK (tax_percent BETWEEN 0 AND 100),
    subtotal         numeric NOT NULL,
    discount         numeric NOT NULL,
    tax              numeric NOT NULL,
    total            numeric NOT NULL,
    UNIQUE (order_id, position)
);
