"""The board definition on the device: ``board.json``, deployed with the firmware.

It is the same file as ``boards/<id>.json`` on the host, so the components App #2 reads
are exactly those the board advertises and the validator checks.
"""
import json

BOARD_FILE = "board.json"


class BoardError(Exception):
    pass


def load(path=BOARD_FILE):
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        raise BoardError("%s not found: deploy the board definition" % path)
    except ValueError:
        raise BoardError("%s is not valid JSON" % path)
    if not isinstance(doc, dict) or not isinstance(doc.get("components"), list):
        raise BoardError("%s has no components list" % path)
    return doc


def components(board):
    return [c for c in board["components"] if isinstance(c, dict) and "id" in c]
