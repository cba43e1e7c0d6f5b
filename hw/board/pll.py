"""PLL parameters and instances: iCE40 ``SB_PLL40_2_PAD`` and ECP5 ``EHXPLLL``.

``ice40_pll(f_in, f_out)`` and ``ecp5_pll(f_in, f_out)`` search the divider
settings (the ranges of Lattice's data sheets, as icepll and ecppll use them)
for the output frequency nearest to ``f_out``; ``ConfigError`` when the request
is outside what the PLL can make (iCE40: 16-275 MHz, ECP5: 3.125-400 MHz) or
no setting comes within 1 %. Checked against ``yowasp-icepll`` / ``yowasp-ecppll``:
12 -> 30 MHz gives DIVR 0, DIVF 79, DIVQ 5, FILTER_RANGE 1 (both); 25 -> 40 MHz
gives CLKI_DIV 5, CLKFB_DIV 8, CLKOP_DIV 15, CLKOP_CPHASE 7 (both).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Instance

from attnforge.errors import ConfigError

__all__ = ["PllSetting", "ice40_pll", "ecp5_pll", "ICE40_OUT_MHZ", "ECP5_OUT_MHZ"]

ICE40_OUT_MHZ = (16.0, 275.0)
ECP5_OUT_MHZ = (3.125, 400.0)


@dataclass(frozen=True)
class PllSetting:
    family: str
    f_in: float          # MHz
    f_out: float         # MHz, what the setting makes
    params: dict         # the primitive's parameters

    def instance(self, clk_in, clk_out, lock, ref_out=None):
        """The PLL primitive: ``clk_in`` (iCE40: the clock pin's ``io``), ``clk_out``, ``lock``; on iCE40
        ``ref_out`` gets the input clock on a global net (``SB_PLL40_2_PAD``'s port A: the pad feeds the
        PLL only, so the fabric reaches the oscillator through it; the board's UART and bridge run on it)."""
        if self.family == "ice40":
            if ref_out is None:
                raise ValueError("the iCE40 PLL instance needs ref_out (the oscillator for the fabric)")
            p = self.params
            return Instance("SB_PLL40_2_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"],
                            p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"], p_PLLOUT_SELECT_PORTB="GENCLK",
                            i_PACKAGEPIN=clk_in, i_RESETB=1, i_BYPASS=0, o_LOCK=lock,
                            o_PLLOUTGLOBALA=ref_out, o_PLLOUTGLOBALB=clk_out)
        p = self.params
        return Instance("EHXPLLL", a_FREQUENCY_PIN_CLKI=str(self.f_in), a_FREQUENCY_PIN_CLKOP=f"{self.f_out:g}",
                        a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                        a_MFG_GMCREF_SEL="2",
                        p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                        p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                        p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                        p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                        p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                        p_CLKFB_DIV=p["CLKFB_DIV"],
                        i_RST=0, i_STDBY=0, i_CLKI=clk_in, o_CLKOP=clk_out, i_CLKFB=clk_out,
                        i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                        i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=lock)


def _check_range(family: str, f_out, lo: float, hi: float) -> float:
    if isinstance(f_out, bool) or not isinstance(f_out, (int, float)) or not lo <= f_out <= hi:
        raise ConfigError(f"--clock-mhz {f_out!r} is not accepted for the {family} PLL; accepted: {lo:g} to "
                          f"{hi:g} MHz")
    return float(f_out)


def _close(family, f_in, f_out, best):
    if best is None or abs(best[0] - f_out) > 0.01 * f_out:
        got = f" (nearest {best[0]:.3f} MHz)" if best else ""
        raise ConfigError(f"--clock-mhz {f_out:g}: the {family} PLL cannot make it from {f_in:g} MHz within 1 %{got}")


def ice40_pll(f_in: float, f_out: float) -> PllSetting:
    """``SB_PLL40`` (simple feedback): f_pfd = f_in / (DIVR + 1) in 10-133 MHz, f_vco = f_pfd (DIVF + 1) in
    533-1066 MHz, f_out = f_vco / 2^DIVQ, DIVQ 1..6."""
    f_out = _check_range("iCE40", f_out, *ICE40_OUT_MHZ)
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                if best is None or abs(out - f_out) < abs(best[0] - f_out):
                    best = (out, dict(DIVR=divr, DIVF=divf, DIVQ=divq, pfd=pfd))
    _close("iCE40", f_in, f_out, best)
    out, p = best
    pfd = p.pop("pfd")
    p["FILTER_RANGE"] = next(i for i, top in enumerate((17, 26, 44, 66, 101, 1e9), 1) if pfd < top)
    return PllSetting("ice40", f_in, out, p)


def ecp5_pll(f_in: float, f_out: float) -> PllSetting:
    """``EHXPLLL`` (feedback from CLKOP): f_pfd = f_in / CLKI_DIV >= 3.125 MHz, f_out = f_pfd CLKFB_DIV,
    f_vco = f_out CLKOP_DIV in 400-800 MHz."""
    f_out = _check_range("ECP5", f_out, *ECP5_OUT_MHZ)
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125 <= pfd <= 400:
            continue
        for clkfb in range(1, 81):
            out = pfd * clkfb
            if not ECP5_OUT_MHZ[0] <= out <= ECP5_OUT_MHZ[1]:
                continue
            ops = [c for c in range(1, 129) if 400 <= out * c <= 800]
            if ops and (best is None or abs(out - f_out) < abs(best[0] - f_out)):
                clkop = min(ops, key=lambda c: abs(out * c - 600))     # the VCO near the middle, as ecppll
                best = (out, dict(CLKI_DIV=clki, CLKFB_DIV=clkfb, CLKOP_DIV=clkop, CLKOP_CPHASE=(clkop - 1) // 2))
    _close("ECP5", f_in, f_out, best)
    return PllSetting("ecp5", f_in, best[0], best[1])
