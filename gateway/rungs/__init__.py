"""The rungs of the ladder, one module each (docs/ladder.md; the table of what each supports
is gateway/ladder.py):

    base       GatewayBase: the interface the shells call, and what every rung shares
    py         rungs 0 and 1, `py` and `py+rs`: the Python pipeline calling the twins
    rs_core    rung 2, `rs-core`: the native engine behind the Python shell, one crossing a request
    rs_server  rung 3, `rs-server`: the launcher of the standalone Rust binary (native/server)
    factory    make_gateway: the rung a configuration asks for, behind a Python shell
"""
