"""Support: tickets, comments, queues and assignment, SLA clocks."""
