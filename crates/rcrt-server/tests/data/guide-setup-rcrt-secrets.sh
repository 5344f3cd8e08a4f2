#!/bin/bash
# setup-rcrt-secrets.sh

set -euo pipefail

# Check if running in production
if [[ "${ENVIRONMENT}" != "production" ]]; then
  echo "ERROR: This script is for production only"
  exit 1
fi

# Retrieve KEK from secure source
echo "Retrieving KEK from vault..."
if command -v vault &> /dev/null; then
  # HashiCorp Vault
  export LOCAL_KEK_BASE64=$(vault kv get -field=kek secret/rcrt/production)
elif [[ -n "${AWS_REGION:-}" ]]; then
  # AWS Secrets Manager
  export LOCAL_KEK_BASE64=$(aws secretsmanager get-secret-value \
    --secret-id rcrt-kek-production \
    --query SecretString --output text)
elif [[ -f "/run/secrets/rcrt_kek" ]]; then
  # Docker/K8s secret
  export LOCAL_KEK_BASE64=$(cat /run/secrets/rcrt_kek)
else
  echo "ERROR: No secure KEK source available"
  exit 1
fi

# Validate KEK format
if [[ ! "$LOCAL_KEK_BASE64" =~ ^[A-Za-z0-9+/]{43}=$ ]]; then
  echo "ERROR: Invalid KEK format"
  exit 1
fi

echo "KEK configured successfully"

# Test secrets service
echo "Testing secrets service..."
TEST_RESPONSE=$(curl -s -X POST http://localhost:8081/secrets \
  -H "Content-Type: application/json" \
  -d '{"name":"test","value":"test","scope_type":"global"}' || echo "FAILED")

if [[ "$TEST_RESPONSE" == "FAILED" ]] || [[ "$TEST_RESPONSE" == *"error"* ]]; then
  echo "ERROR: Secrets service test failed"
  exit 1
fi

echo "✅ RCRT secrets service is operational"

# Clean up test secret
TEST_ID=$(echo "$TEST_RESPONSE" | jq -r .id)
curl -X DELETE "http://localhost:8081/secrets/$TEST_ID"

# Log successful setup (without exposing KEK)
echo "Production secrets service initialized at $(date -Iseconds)" >> /var/log/rcrt-setup.log
