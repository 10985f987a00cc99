"""Boards as data: board files (boards/*.json), their checker and a registry.

Usage::

    from host_tools.boards import load_board, components
    board = load_board("esp32-devkitc")
"""

from host_tools.boards.registry import Board, all_boards, components, load_board

__all__ = ["Board", "all_boards", "components", "load_board"]
