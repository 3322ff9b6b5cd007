"""The executor service: signals become reserved, sent orders; the ledger is kept in line with the venue.

See service.py for the layout (decide, orders, order_status, market view, risk, ledger, outbox, commands)."""
