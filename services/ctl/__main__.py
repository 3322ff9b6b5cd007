"""`python -m services.ctl` is the same as the `kdesk` command."""

from services.ctl.cli import main

main()
