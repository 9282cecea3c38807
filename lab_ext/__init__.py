"""IPython extension for gatewaylab notebooks: `%load_ext lab_ext`."""
