"""Real quote verification: Intel SGX and TDX DCAP quotes, checked with ``dcap-qvl`` (MIT, Phala).

``dcap-qvl`` verifies the quote's ECDSA signature, the PCK certificate chain up to Intel's
root CA (built into it), the CRLs, the TCB info and QE identity of the collateral (each
signed by Intel), and returns the platform's TCB status with Intel's security advisories.
It works offline given the collateral: evidence carries the collateral JSON (fetch it
from a PCCS or Intel's PCS with ``dcap_qvl.get_collateral`` where the verifier has a
network), and the collateral is checked, not trusted. Collateral expires (CRLs' and TCB
info's next-update dates): verification at a time past them fails, so tests pin the clock.

The policy then decides: ``accepted_tcb`` (``UpToDate`` by default; Intel's other statuses
by name), debug enclaves refused unless ``allow_debug``, measurement = MRENCLAVE (SGX) or
MRTD (TDX) in the allow-list (:func:`atoll.tee.base.verify_evidence`).
"""

from __future__ import annotations

import json
from typing import Any

from atoll.errors import ConfigError
from atoll.tee.base import AttestationError, EnclaveBackend, EnclavePolicy, Evidence, QuoteFacts


def _dcap() -> Any:
    try:
        import dcap_qvl
    except ImportError:
        raise ConfigError("verifying SGX/TDX quotes needs dcap-qvl: pip install 'atoll[tee]'") from None
    return dcap_qvl


def verify_dcap(quote: bytes, collateral_json: str, now: float, pccs_url: str | None = None) -> dict[str, Any]:
    """dcap-qvl's verdict as a dict: ``status``, ``advisory_ids``, ``report`` ({"SgxEnclave"|"TD10"|...: fields}).

    Without ``collateral_json`` it is fetched from ``pccs_url`` (the policy's; a network call)."""
    dcap_qvl = _dcap()
    if not collateral_json:
        if not pccs_url:
            raise AttestationError("a DCAP quote needs its collateral: attach it to the evidence, or set the "
                                   "policy's pccs_url (e.g. Intel's PCS) so the verifier fetches it")
        import asyncio

        try:
            collateral_json = asyncio.run(dcap_qvl.get_collateral(pccs_url, bytes(quote))).to_json()
        except Exception as e:  # network or PCCS errors: say which step
            raise AttestationError(f"fetching DCAP collateral from the PCCS failed: {type(e).__name__}") from None
    try:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    except ValueError:
        raise AttestationError("malformed DCAP collateral") from None
    try:
        verdict = dcap_qvl.verify(bytes(quote), collateral, int(now))
    except ValueError as e:
        raise AttestationError(f"DCAP quote verification failed: {e}") from None
    return json.loads(verdict.to_json())


class SgxDcapBackend(EnclaveBackend):
    """SGX enclaves (ECDSA / DCAP quotes): measurement = MRENCLAVE."""

    name = "sgx-dcap"

    @classmethod
    def verify_quote(cls, evidence: Evidence, policy: EnclavePolicy, now: float) -> QuoteFacts:
        v = verify_dcap(evidence.quote, evidence.collateral, now, policy.pccs_url if policy else None)
        rep = v["report"].get("SgxEnclave")
        if rep is None:
            raise AttestationError(f"expected an SGX enclave quote, got {', '.join(v['report'])}")
        attributes = bytes.fromhex(rep["attributes"])
        return QuoteFacts(measurement=rep["mr_enclave"], report_data=bytes.fromhex(rep["report_data"]),
                          simulated=False, tcb_status=v["status"], advisories=tuple(v["advisory_ids"]),
                          debug=bool(attributes[0] & 0x02),
                          details={"mr_signer": rep["mr_signer"], "isv_prod_id": str(rep["isv_prod_id"]),
                                   "isv_svn": str(rep["isv_svn"])})


class TdxBackend(EnclaveBackend):
    """TDX trust domains: measurement = MRTD (RTMR0-3 reported in ``details``)."""

    name = "tdx"

    @classmethod
    def verify_quote(cls, evidence: Evidence, policy: EnclavePolicy, now: float) -> QuoteFacts:
        v = verify_dcap(evidence.quote, evidence.collateral, now, policy.pccs_url if policy else None)
        kind = next((k for k in v["report"] if k.startswith("TD")), None)
        if kind is None:
            raise AttestationError(f"expected a TDX quote, got {', '.join(v['report'])}")
        rep = v["report"][kind]
        attributes = bytes.fromhex(rep["td_attributes"])
        return QuoteFacts(measurement=rep["mr_td"], report_data=bytes.fromhex(rep["report_data"]),
                          simulated=False, tcb_status=v["status"], advisories=tuple(v["advisory_ids"]),
                          debug=bool(attributes[0] & 0x01),
                          details={k: rep[k] for k in ("rt_mr0", "rt_mr1", "rt_mr2", "rt_mr3", "mr_config_id",
                                                       "mr_owner", "mr_seam")})
