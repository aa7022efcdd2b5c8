"""The audit engine: attack settings x dataset slices -> per-image arrays -> report sections.

Usable without the service::

    from workers.audit import run_audit
    report = run_audit(model, images, labels, attacks=[{"name": "pgd", "params": {"eps": 4/255}}])
"""

from workers.audit.engine import AttackSetting, AuditEngine, expand_attacks
from workers.audit.local import run_audit

__all__ = ["AttackSetting", "AuditEngine", "expand_attacks", "run_audit"]
