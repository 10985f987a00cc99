# Runs at boot on the board and on the virtual kit.
import tk.main

tk.main.start()
