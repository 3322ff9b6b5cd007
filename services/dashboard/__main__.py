"""`python -m services.dashboard`: the desk's web page (127.0.0.1:8765 unless KDESK_DASHBOARD_HOST/PORT say)."""

import sys

from libs.common.config import ConfigError, load_settings
from libs.common.runtime import run_service
from services.dashboard.access import check_binding
from services.dashboard.service import run_dashboard


def main() -> None:
    """Refuse an unsafe binding before anything starts (exit 2, as for any bad configuration), then serve."""
    try:
        s = load_settings()
        check_binding(s.dashboard_host, s.dashboard_token.get_secret_value() if s.dashboard_token else None)
    except ConfigError as e:
        print(f"kdesk dashboard: {e}", file=sys.stderr)
        sys.exit(2)
    run_service("dashboard", run_dashboard)


if __name__ == "__main__":
    main()
