"""Real SGX / TDX quotes verified with dcap-qvl (its bundled samples, clock pinned), and refused when
altered, expired or of a TCB status the policy does not accept."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from atoll.tee.base import AttestationError, EnclavePolicy, Evidence, PolicyError, verify_evidence

pytest.importorskip("dcap_qvl")
DATA = Path(__file__).parent / "data" / "dcap"
PINNED = dt.datetime(2025, 7, 1, tzinfo=dt.timezone.utc).timestamp()  # inside the samples' collateral validity
SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
TDX_MRTD = ("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
            "de03ae6dc5f87f27428b2538873118b7")


def sample(kind: str, quote: bytes | None = None) -> Evidence:
    name = {"sgx-dcap": "sgx_quote", "tdx": "tdx_quote"}[kind]
    return Evidence(kind, quote if quote is not None else (DATA / name).read_bytes(),
                    (DATA / f"{name}_collateral.json").read_text())


def report_data(kind: str) -> bytes:
    from atoll.tee.base import get_backend

    return get_backend(kind).verify_quote(sample(kind), None, PINNED).report_data


def test_sgx_sample_verifies_with_status_advisories_and_measurement():
    pol = EnclavePolicy(measurements=[SGX_MRENCLAVE], backends=["sgx-dcap"],
                        accepted_tcb=["UpToDate", "ConfigurationAndSWHardeningNeeded"])
    rd = report_data("sgx-dcap")
    assert rd.startswith(b"Hello, world!") and len(rd) == 64
    got = verify_evidence(sample("sgx-dcap"), pol, rd, now=PINNED)
    assert got.measurement == SGX_MRENCLAVE and not got.simulated
    assert got.tcb_status == "ConfigurationAndSWHardeningNeeded"
    assert got.advisories == ("INTEL-SA-00289", "INTEL-SA-00615")
    assert got.details["mr_signer"].startswith("815f42f1")


def test_tdx_sample_verifies():
    pol = EnclavePolicy(measurements=[TDX_MRTD], backends=["tdx"])
    got = verify_evidence(sample("tdx"), pol, report_data("tdx"), now=PINNED)
    assert got.tcb_status == "UpToDate" and got.advisories == () and got.measurement == TDX_MRTD
    assert set(got.details) >= {"rt_mr0", "rt_mr3"}


def test_unaccepted_tcb_status_is_refused_with_the_advisories():
    pol = EnclavePolicy(measurements=[SGX_MRENCLAVE], backends=["sgx-dcap"])  # UpToDate only
    with pytest.raises(PolicyError, match="ConfigurationAndSWHardeningNeeded.*INTEL-SA-00289"):
        verify_evidence(sample("sgx-dcap"), pol, report_data("sgx-dcap"), now=PINNED)
    with pytest.raises(ValueError, match="revoked"):
        EnclavePolicy(measurements=[SGX_MRENCLAVE], accepted_tcb=["Revoked"])


@pytest.mark.parametrize("kind", ["sgx-dcap", "tdx"])
@pytest.mark.parametrize("where", ["header", "measurement", "report_data", "signature"])
def test_one_flipped_byte_is_refused(kind, where):
    quote = bytearray(sample(kind).quote)
    body = 48 + (64 if kind == "sgx-dcap" else 136)           # after the header: MRENCLAVE / MRTD
    offset = {"header": 10, "measurement": body, "report_data": 48 + (320 if kind == "sgx-dcap" else 520),
              "signature": len(quote) - 2000}[where]
    quote[offset] ^= 0x01
    pol = EnclavePolicy(measurements=[SGX_MRENCLAVE, TDX_MRTD], backends=[kind],
                        accepted_tcb=["UpToDate", "ConfigurationAndSWHardeningNeeded"])
    with pytest.raises(AttestationError):
        verify_evidence(sample(kind, bytes(quote)), pol, report_data(kind), now=PINNED)


def test_expired_collateral_wrong_kind_and_wrong_report_data_are_refused():
    pol = EnclavePolicy(measurements=[SGX_MRENCLAVE, TDX_MRTD], backends=["sgx-dcap", "tdx"],
                        accepted_tcb=["UpToDate", "ConfigurationAndSWHardeningNeeded"])
    with pytest.raises(AttestationError, match="Expired|expired"):
        verify_evidence(sample("sgx-dcap"), pol, report_data("sgx-dcap"))          # today's clock
    tdx_as_sgx = Evidence("sgx-dcap", sample("tdx").quote, sample("tdx").collateral)
    with pytest.raises(AttestationError, match="expected an SGX"):
        verify_evidence(tdx_as_sgx, pol, report_data("tdx"), now=PINNED)
    with pytest.raises(AttestationError, match="replayed or stale"):
        verify_evidence(sample("tdx"), pol, bytes(64), now=PINNED)
    with pytest.raises(AttestationError, match="pccs_url"):
        verify_evidence(Evidence("tdx", sample("tdx").quote), pol, report_data("tdx"), now=PINNED)
    with pytest.raises(AttestationError, match="accepts only"):
        verify_evidence(sample("tdx"), EnclavePolicy(measurements=[TDX_MRTD], backends=["simulated"]),
                        report_data("tdx"), now=PINNED)
