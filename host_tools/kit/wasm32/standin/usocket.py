# ``usocket``: umqtt.simple 1.3.4 imports this name; the same import-only stand-in.
from socket import *  # noqa: F401,F403
