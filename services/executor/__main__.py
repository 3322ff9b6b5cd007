"""`python -m services.executor`: signals in, maker-first orders out, caps reserved, ledger reconciled."""

from libs.common.runtime import run_service
from services.executor.service import run_executor

if __name__ == "__main__":
    run_service("executor", run_executor)
