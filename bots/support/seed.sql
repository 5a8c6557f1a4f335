-- Sample data for Example Co. (the support bot's demo company). `make support-db` builds
-- .parley/support.db from this file; bots/support/tools.py serves it as an MCP server.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,            -- what customers quote, e.g. A1001
    customer_email TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled', 'returned')),
    placed_on TEXT NOT NULL,        -- ISO date
    shipped_on TEXT,
    carrier TEXT,
    tracking TEXT,
    items TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT REFERENCES orders(id),
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    requested_by TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'open',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

INSERT OR IGNORE INTO orders VALUES
    ('A1001', 'ana@example.com',   'shipped',    '2026-11-28', '2026-11-29', 'DHL',  'JD014600003812', '1x Trail backpack 30L'),
    ('A1002', 'ben@example.com',   'processing', '2026-12-02', NULL,         NULL,   NULL,             '2x Merino socks'),
    ('A1003', 'chen@example.com',  'delivered',  '2026-11-20', '2026-11-20', 'UPS',  '1Z999AA10123456784', '1x Rain jacket M'),
    ('A1004', 'dara@example.com',  'cancelled',  '2026-11-25', NULL,         NULL,   NULL,             '1x Camping stove'),
    ('A1005', 'eli@example.com',   'returned',   '2026-11-10', '2026-11-11', 'DPD',  '05212345678901', '1x Hiking boots 42');
