"""kdesk: automated trading desk for Kalshi prediction markets."""
