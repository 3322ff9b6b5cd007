"""`python -m services.signals`: weather and BTC models vs the books; fee-aware signals on sig.*."""

from libs.common.runtime import run_service
from services.signals.service import run_signals

if __name__ == "__main__":
    run_service("signals", run_signals)
