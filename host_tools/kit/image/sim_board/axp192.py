"""AXP192 power manager emulator for the virtual kit (see sim_board.i2c_bus).

Registers: IC type 0x03 = 0x03 (state "chip_id" changes it), status 0x01 (bit 5
battery present, bit 6 charging: state "charging"), ADC enable 0x82 (0 at power-up
here, so a driver must set bit 7), battery voltage 0x78/0x79 (12 bits, 1.1 mV per LSB;
state "voltage" or "battery_voltage", default 3.9 V), which read 0 while that ADC is off.
"""
from sim_board import state as sim_state
from sim_board.i2c_bus import RegDevice


class Device(RegDevice):
    def sync(self):
        comp = self.comp
        st = sim_state.comp_state(comp["id"])
        cid = st.get("chip_id")
        self.regs[0x03] = 0x03 if cid is None else cid
        self.regs[0x01] = 0x20 | (0x40 if st.get("charging") else 0)
        self._update()

    def store(self, reg, val):
        self.regs[reg] = val
        if reg == 0x82:
            self._update()

    def _update(self):
        comp = self.comp
        v = sim_state.comp_state(comp["id"]).get("battery_voltage")
        if v is None:
            v = sim_state.value(comp, "voltage", 3.9)
        raw = max(0, min(4095, int(round(v / 0.0011)))) if self.regs[0x82] & 0x80 else 0
        self.regs[0x78] = raw >> 4
        self.regs[0x79] = raw & 0x0F
