"""On PostgreSQL the gateway reads tokens on an asyncio connection of its own
(dashboard.tokens.token_owner): a token revoked by another process stops working at the next request."""

from __future__ import annotations

import httpx

from tests.support.scaled import Deployment, scaled_out_marks

pytestmark = scaled_out_marks()


def test_a_token_revoked_elsewhere_stops_working_at_once_on_postgresql(tmp_path):
    deployment = Deployment(tmp_path)
    try:
        deployment.setup()
        web = deployment.start_web()
        secret = deployment.manage("create_token", "alice").strip().splitlines()[-1]
        url = f"{web}/gateway/simulator/v1/models"
        bearer = {"Authorization": f"Bearer {secret}"}
        for _ in range(3):  # the first writes last_used_at (the database thread), the others read directly
            assert httpx.get(url, headers=bearer, timeout=10).status_code == 200
        deployment.manage("shell", "-c", "from dashboard.models import ApiToken; from dashboard.tokens import "
                                         "revoke_token; revoke_token(ApiToken.objects.get())")
        refused = httpx.get(url, headers=bearer, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url, headers={"Authorization": "Bearer ssk_nobody"}, timeout=10).status_code == 401
    finally:
        deployment.close()
