"""`python -m services.notifier`: Telegram alerts, digests and operator commands (aiogram 3)."""

from libs.common.runtime import run_service
from services.notifier.service import run_notifier

if __name__ == "__main__":
    run_service("notifier", run_notifier)
