"""The HSM-side service: API, portal, core, audit, jobs."""
