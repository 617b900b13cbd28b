"""Blueprint tests use the API's personas: a tenant's owner and an outsider tenant."""

from tests.platform.api.conftest import agent as agent
from tests.platform.api.conftest import outsider as outsider
from tests.platform.api.conftest import owner as owner
