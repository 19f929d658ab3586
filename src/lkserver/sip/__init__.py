"""SIP: trunk and dispatch-rule logic, the SIP user agent and the bridge into rooms."""
