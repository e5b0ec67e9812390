"""Hotline IVR: Twilio webhooks, the call tree, tickets and operators.

Start at `ivr.web.app.create_app` (the service), `ivr.flow` (the call tree) or `ivr.cli`
(the `ivr` command); docs/architecture.md draws how the modules depend on each other.
"""
