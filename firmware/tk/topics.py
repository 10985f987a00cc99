"""Topic names, built from the config's prefix and thing name (never hard-coded).

    status  <prefix>/<thing>/status   App #1 online message; the Last Will says offline
    ping    <prefix>/<thing>/ping      App #1 subscription: anyone may ask "are you there"
    pong    <prefix>/<thing>/pong      the device's answer to each ping
    telemetry <prefix>/<thing>/telemetry  App #2 readings
    diag    <prefix>/<thing>/diag      diagnostics
"""


class Topics:
    def __init__(self, prefix, thing):
        base = "%s/%s/" % (prefix, thing)
        self.status = (base + "status").encode()
        self.ping = (base + "ping").encode()
        self.pong = (base + "pong").encode()
        self.telemetry = (base + "telemetry").encode()
        self.diag = (base + "diag").encode()
