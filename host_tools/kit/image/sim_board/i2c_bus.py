"""An emulated I2C bus for the virtual kit, with the machine.I2C methods drivers use.

    from sim_board import i2c_bus
    bus = sim_i2c.SimI2C(0)              # the board's bus with "id": 0
    bus.scan()                           # [104, 118]
    bus.log = []                         # record writes: [(addr, bytes on the wire)]
    bus.readfrom_mem_into(0x76, 0xD0, buf)

The devices on the bus are the board's components on it (sim_state: board.json),
each emulated register by register by ``sim_board.<driver>.Device`` (imported when first
needed). A component listed in the state file's "unplugged" does not answer: every
transfer to its address raises OSError(19) (ENODEV), as machine.I2C does on an ESP32
when an address is not acknowledged. Plugging it back powers up a fresh device, with its
registers at their reset values, as a real part that lost power.
"""
import time

from micropython import const

from sim_board import state as sim_state

_ENODEV = const(19)


class RegDevice:
    """A register-file device: a write sets the register pointer then writes data that
    auto-increments; a read returns registers from the pointer on. Subclasses hook
    store()/load() and refresh their state-driven registers in sync()."""

    def __init__(self, comp):
        self.comp = comp
        self.regs = bytearray(256)
        self.ptr = 0

    def sync(self):
        """The state file changed (also called once after power-up)."""

    def store(self, reg, val):
        self.regs[reg] = val

    def load(self, reg):
        return self.regs[reg]

    def write(self, buf):
        n = len(buf)
        if n:
            self.write_reg(buf[0], buf, 1)

    def write_reg(self, reg, buf, start=0):
        ptr = reg & 0xFF
        for i in range(start, len(buf)):
            self.store(ptr, buf[i])
            ptr = (ptr + 1) & 0xFF
        self.ptr = ptr

    def read(self, buf):
        ptr = self.ptr
        for i in range(len(buf)):
            buf[i] = self.load(ptr)
            ptr = (ptr + 1) & 0xFF
        self.ptr = ptr

    def read_reg(self, reg, buf):
        self.ptr = reg & 0xFF
        self.read(buf)


def _make(comp):
    """A powered-up emulator for the component, or None if there is no emulator."""
    try:
        mod = __import__("sim_board." + comp.get("driver", ""), None, None, ("Device",))
    except ImportError:
        return None
    make = getattr(mod, "Device", None)  # sim_board.hw, sim_state, ... are not emulators
    if make is None:
        return None
    dev = make(comp)
    dev.sync()
    return dev


class SimI2C:
    def __init__(self, bus_id):
        self.id = bus_id
        self.log = None  # a list to record writes into: (addr, bytes)
        self._comps = sim_state.comps_on_bus(bus_id)  # {address: component}
        self._devs = {}  # {address: emulator} of the devices plugged in
        self._gen = -1

    def _sync(self):
        for addr, comp in self._comps.items():
            dev = self._devs.get(addr)
            if not sim_state.present(comp):
                self._devs.pop(addr, None)
            elif dev is None:
                dev = _make(comp)
                if dev is not None:
                    self._devs[addr] = dev
            else:
                dev.sync()
        self._gen = sim_state.gen

    def device(self, addr):
        """The emulator answering at ``addr`` (OSError(19) if none)."""
        sim_state.poll()
        if self._gen != sim_state.gen:
            self._sync()
        comp = self._comps.get(addr)
        # A fault the state file can inject: "hang": true on a component makes a transfer
        # to it never return (a part holding the bus with no time-out to end it): the
        # firmware's loop hangs there, and only the watchdog gets the kit out.
        while comp is not None and sim_state.comp_state(comp["id"]).get("hang"):
            time.sleep_ms(100)
            sim_state.poll()
        dev = self._devs.get(addr)
        if dev is None:
            raise OSError(_ENODEV)
        return dev

    def _record(self, addr, reg, buf):
        b = bytes(buf) if reg is None else bytes((reg,)) + bytes(buf)
        self.log.append((addr, b))

    # -- machine.I2C ------------------------------------------------------------------
    def scan(self):
        sim_state.poll()
        if self._gen != sim_state.gen:
            self._sync()
        return sorted(self._devs)

    def writeto(self, addr, buf, stop=True):
        dev = self.device(addr)
        if self.log is not None:
            self._record(addr, None, buf)
        dev.write(buf)
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        self.device(addr).read(buf)

    def readfrom(self, addr, nbytes, stop=True):
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf)
        return bytes(buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        dev = self.device(addr)
        if self.log is not None:
            self._record(addr, memaddr, buf)
        dev.write_reg(memaddr, buf)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self.device(addr).read_reg(memaddr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)
