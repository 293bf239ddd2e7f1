"""upay-bridge: take payment for store orders through UPayments invoices.

Importing the package (or ``bridge.mapping``) must not import Flask: the worker and the pure
mapping tests load only what they use.
"""

__version__ = "0.1.0"
