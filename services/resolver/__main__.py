"""`python -m services.resolver`: market outcomes, official climate reports and the desk's scores."""

from libs.common.runtime import run_service
from services.resolver.service import run_resolver

if __name__ == "__main__":
    run_service("resolver", run_resolver)
