"""The matching engine shared by the simulated exchange and the paper broker."""
