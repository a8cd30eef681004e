"""Deploy messages (issue 17, points 10 and 12): a firmware fault names the fault: the board's fault handler
(deploy/targets/common/startup_cm7.c) reports which handler ran and the fault status registers;
tinydet.deploy.run.describe_fault decodes them into the one-line error."""
from __future__ import annotations

import pytest

from tinydet.deploy import toolchain
from tinydet.deploy.run import describe_fault
from tinydet.errors import TinydetError

FAULTS = {  # main() bodies that fault, and what the error must say
    "bus": ("volatile unsigned *bad = (volatile unsigned *)0xF0000000u; return (int)*bad;",
            r"BusFault at pc 0x[0-9a-f]{8} \(lr 0x[0-9a-f]{8}\): PRECISERR: precise data bus error; "
            r"address 0xf0000000 \[cfsr 0x00008200"),
    "usage": ('__asm volatile("udf #0"); return 0;', r"UsageFault at pc 0x[0-9a-f]{8} .*UNDEFINSTR: undefined instruction"),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_qemu_fault_is_named_with_its_status_bits(kind, tmp_path):
    body, expected = FAULTS[kind]
    src = tmp_path / f"{kind}.c"
    src.write_text(f"int main(void)\n{{\n    {body}\n}}\n")
    elf = toolchain.compile([src], "qemu-mps2-an500", tmp_path / f"{kind}.elf")
    with pytest.raises(TinydetError, match=r"crashed under QEMU \(exit 3; " + expected) as info:
        toolchain.run_qemu(elf, tmp_path / "run", timeout_s=30)
    assert "\n" not in str(info.value)


def test_escalated_hardfault_names_the_underlying_fault():
    report = ("tinydet: HARDFAULT (crash in firmware)\n  fault HardFault\n  pc   0x00000100\n  lr   0x00000201\n"
              "  cfsr 0x02000000\n  hfsr 0x40000000\n  mmfar 0x00000000\n  bfar 0x00000000\n")
    assert describe_fault(report) == ("HardFault (escalated UsageFault) at pc 0x00000100 (lr 0x00000201): "
                                      "DIVBYZERO: integer division by zero [cfsr 0x02000000, hfsr 0x40000000]")
    assert describe_fault("image 0 rc=0 ticks=5\n") is None


def test_deploy_validate_explains_the_onnxruntime_fraction():
    """deploy --validate gates on the bit-exact check; a detections fraction below 1 vs onnxruntime
    is explained on stderr instead of standing unexplained beside exit 0 (issue 17, point 10)."""
    from tinydet.deploy.validate import ort_note

    report = {"outputs_bit_exact_vs_reference": True, "detections_match_fraction_vs_onnxruntime": 0.0,
              "detections_match_fraction_vs_python_decode": 1.0}
    note = ort_note(report)
    assert "requantizes in float" in note and "the gate is outputs_bit_exact_vs_reference (True)" in note
    assert "\n" not in note
    assert ort_note(dict(report, detections_match_fraction_vs_onnxruntime=1.0)) is None
    assert ort_note({"detections_match_fraction_vs_onnxruntime": None}) is None
