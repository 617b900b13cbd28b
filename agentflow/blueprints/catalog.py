"""The built-in blueprints besides ``support_agent``, in the order the API lists them.

Each blueprint lives in its own module (`agentflow.blueprints.<name>`, kernel agent in
`agentflow.kernel.blueprints.<name>`) and adds its `BlueprintSpec` here.
"""

from __future__ import annotations

from agentflow.blueprints import BlueprintSpec
from agentflow.blueprints.code_review import SPEC as CODE_REVIEW
from agentflow.blueprints.compliance_auditor import SPEC as COMPLIANCE_AUDITOR
from agentflow.blueprints.data_analyst import SPEC as DATA_ANALYST
from agentflow.blueprints.knowledge_manager import SPEC as KNOWLEDGE_MANAGER
from agentflow.blueprints.onboarding import SPEC as ONBOARDING
from agentflow.blueprints.qa_test import SPEC as QA_TEST
from agentflow.blueprints.sentiment_monitor import SPEC as SENTIMENT_MONITOR
from agentflow.blueprints.triage import SPEC as TRIAGE

SPECS: tuple[BlueprintSpec, ...] = (
    TRIAGE,
    SENTIMENT_MONITOR,
    CODE_REVIEW,
    COMPLIANCE_AUDITOR,
    KNOWLEDGE_MANAGER,
    DATA_ANALYST,
    ONBOARDING,
    QA_TEST,
)
