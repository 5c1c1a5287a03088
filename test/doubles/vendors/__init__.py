"""One module per vendor of the connector catalogue; see ../vendor_double.py."""
