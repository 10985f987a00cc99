"""Stand-in for the ``umqtt.simple`` a stock ESP32 image freezes (micropython-lib 1.4.0
in v1.24; 1.6.0 and 1.7.0 in later releases).

A stock image searches ``.frozen`` before ``/lib``, so unless the firmware puts its own
libraries first, this is the module ``import umqtt.simple`` finds. It has the stock
constructor signature of 1.4.0 (``ssl`` is an SSLContext; there is no ``ssl_params``),
so a call written for the release thingkit pins fails here as it would on the board:
``TypeError`` at ``MQTTClient(..., ssl_params=...)``. It is not an MQTT client: any
use prints why and raises.
"""


class MQTTException(Exception):
    pass


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None):
        print("W umqtt: the stock image's frozen umqtt.simple is in use, not /lib's")
        self.client_id = client_id
        self.server = server
        self.ssl = ssl

    def __getattr__(self, name):
        raise OSError("stock frozen umqtt.simple stand-in: %s() not emulated" % name)
