"""`python -m services.feeds`: Kalshi markets and books, BTC venues, weather — onto the bus and into PostgreSQL."""

from libs.common.runtime import run_service
from services.feeds.service import run_feeds

if __name__ == "__main__":
    run_service("feeds", run_feeds)
