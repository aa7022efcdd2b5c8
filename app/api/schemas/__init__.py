"""Request and response schemas, by purpose (``XCreate``, ``XPublic``, ``XStatus``)."""
