"""Build the Kalshi client a process needs from its settings (mode → environment → key)."""

from __future__ import annotations

from libs.common.config import ConfigError, Settings
from libs.common.kalshi.rest import DEMO, PROD, Environment, KalshiRest, sim_environment
from libs.common.kalshi.signing import Signer, load_private_key


def environment(settings: Settings) -> Environment:
    """The REST/WS endpoints for the settings' mode; sim needs KDESK_KALSHI_REST_URL/WS_URL."""
    env = settings.kalshi_env()
    if env == "sim":
        if (not settings.kalshi_rest_url or not settings.kalshi_ws_url) and settings.sim_base_port:
            from libs.common.simnet import SimEndpoints

            sim = SimEndpoints(settings.sim_host, settings.sim_base_port)
            return sim_environment(settings.kalshi_rest_url or sim.kalshi_rest_url,
                                   settings.kalshi_ws_url or sim.kalshi_ws_url)
        if not settings.kalshi_rest_url or not settings.kalshi_ws_url:
            raise ConfigError("KDESK_MODE=sim needs KDESK_SIM_BASE_PORT (or KDESK_KALSHI_REST_URL and "
                              "KDESK_KALSHI_WS_URL): where the simulator listens; `kdesk up` sets it")
        return sim_environment(settings.kalshi_rest_url, settings.kalshi_ws_url)
    base = DEMO if env == "demo" else PROD
    if settings.kalshi_rest_url or settings.kalshi_ws_url:
        # Explicit URLs (e.g. the "also supported" hosts) for the same environment; keys stay per environment.
        return Environment(base.name, (settings.kalshi_rest_url or base.rest_url).rstrip("/"),
                           settings.kalshi_ws_url or base.ws_url)
    return base


def signer(settings: Settings) -> Signer | None:
    """The signer for exactly this mode's environment, or None when no key is configured."""
    creds = settings.kalshi_credentials(settings.kalshi_env())
    if creds is None:
        return None
    return Signer(creds.key_id.get_secret_value(), load_private_key(creds.private_key_path))


def rest_client(settings: Settings, **kw: object) -> KalshiRest:
    """A REST client for this process's mode."""
    return KalshiRest(environment(settings), signer(settings), **kw)  # type: ignore[arg-type]
