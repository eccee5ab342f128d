#!/usr/bin/env python3
"""Offline checks of infra/main.bicep and infra/main.parameters.json.

This is NOT the Bicep compiler: the Bicep CLI cannot be installed on our machines, so nothing here
checks types, API versions against Azure's schemas, or what Azure would accept. It parses the
template with pycep-parser (a Python Bicep parser; catches syntax errors) and then checks the
decisions the app depends on: the Flex Consumption custom-handler runtime, identity-only access
(Redis through Entra ID with access keys off), every setting the handler and the function.json
files need, Key Vault references for secrets, the queue's dead-lettering, and no secret in the
parameters file. Prints "N passed, M failed".

usage: python3 infra/check.py   (needs: pip install pycep-parser)
"""
import json
import pathlib
import sys

from pycep import BicepParser

INFRA = pathlib.Path(__file__).resolve().parent
ROOT = INFRA.parent

# What crates/onboarding/src/config.rs requires when serving under the host (FUNCTIONS_CUSTOMHANDLER_PORT is set by
# the host itself), plus the provider's send rate, which the deployment always sets so that a burst
# of sign-ups waits for send slots; and which of those are secrets.
HANDLER_REQUIRED = {"REDIS_URL", "REDIS_CREDENTIAL", "REDIS_CLIENT_ID", "JWT_SECRET", "SMTP_URL",
                    "MAIL_FROM", "SMTP_MAX_PER_MINUTE"}
# Redis is reached with the identity (Entra ID), so REDIS_URL is not a secret any more.
SECRETS = {"JWT_SECRET", "SMTP_URL"}
# App settings that Flex Consumption replaced with functionAppConfig or no longer supports.
FLEX_DEPRECATED = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION", "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "AzureWebJobsStorage",
}
ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39",  # Azure Service Bus Data Sender
    "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0",  # Azure Service Bus Data Receiver
    "4633458b-17de-408a-b874-0445c86b69e6",  # Key Vault Secrets User
    "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
}

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail and not ok else ""))


def accessor(expr):
    """`identity.properties.clientId` for pycep's nested property accessors; strings as they are."""
    if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
        operands = expr["operator"]["operands"]
        return f'{accessor(operands["operand_1"])}.{accessor(operands["operand_2"])}'
    return expr if isinstance(expr, str) else json.dumps(expr)


def of_type(resources, resource_type):
    return [r for r in resources.values() if r["type"] == resource_type]


def one(resources, resource_type):
    found = of_type(resources, resource_type)
    return found[0]["config"] if len(found) == 1 else {}


def main():
    try:
        template = BicepParser().parse(file_path=INFRA / "main.bicep")
    except Exception as err:  # the parser raises lark errors of several kinds
        check("main.bicep parses", False, f"{type(err).__name__}: {err}")
        return finish()
    check("main.bicep parses", True)
    resources, params, variables = template["resources"], template["parameters"], template["variables"]

    check("no preview API versions",
          not [r["api_version"] for r in resources.values() if "preview" in r["api_version"]])

    plan = one(resources, "Microsoft.Web/serverfarms")
    check("plan is Flex Consumption (FC1, Linux)",
          plan.get("sku") == {"name": "FC1", "tier": "FlexConsumption"}
          and plan.get("properties", {}).get("reserved") is True)

    site = one(resources, "Microsoft.Web/sites")
    props = site.get("properties", {})
    config = props.get("functionAppConfig", {})
    check("app is kind functionapp,linux", site.get("kind") == "functionapp,linux")
    check("runtime is the custom handler, version 1.0",
          config.get("runtime") == {"name": "custom", "version": "1.0"})
    check("deployment storage uses the user-assigned identity",
          config.get("deployment", {}).get("storage", {}).get("authentication", {}).get("type")
          == "UserAssignedIdentity")
    check("Key Vault references resolve with the user-assigned identity",
          "keyVaultReferenceIdentity" in props)

    settings = one(resources, "Microsoft.Web/sites/config").get("properties", {})
    check("the handler's required settings are set", HANDLER_REQUIRED <= settings.keys(),
          f"missing {sorted(HANDLER_REQUIRED - settings.keys())}")
    not_refs = [s for s in SECRETS if not str(settings.get(s, "")).startswith("@Microsoft.KeyVault(")]
    check("secrets are Key Vault references", not not_refs, f"not references: {sorted(not_refs)}")
    check("no setting Flex Consumption deprecates", not FLEX_DEPRECATED & settings.keys(),
          f"found {sorted(FLEX_DEPRECATED & settings.keys())}")
    check("host storage through the identity",
          settings.get("AzureWebJobsStorage__credential") == "managedidentity"
          and {"AzureWebJobsStorage__accountName", "AzureWebJobsStorage__clientId"} <= settings.keys())
    check("Application Insights with Entra authentication",
          {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
          <= settings.keys()
          and one(resources, "Microsoft.Insights/components").get("properties", {}).get("DisableLocalAuth") is True)

    # Every connection and queue named in the function.json files exists in the template.
    bindings = [b for p in sorted(ROOT.glob("*/function.json"))
                for b in json.loads(p.read_text())["bindings"]]
    connections = {b["connection"] for b in bindings if "connection" in b}
    queues = {b["queueName"] for b in bindings if "queueName" in b}
    for connection in sorted(connections):
        check(f"connection {connection} through the identity",
              f"{connection}__fullyQualifiedNamespace" in settings
              and settings.get(f"{connection}__credential") == "managedidentity")
    check("queue name matches function.json",
          queues == {variables.get("queueName", {}).get("value")}, f"function.json names {sorted(queues)}")

    queue = one(resources, "Microsoft.ServiceBus/namespaces/queues").get("properties", {})
    check("queue dead-letters after 10 deliveries and on expiry",
          queue.get("maxDeliveryCount") == 10 and queue.get("deadLetteringOnMessageExpiration") is True)
    namespace = one(resources, "Microsoft.ServiceBus/namespaces").get("properties", {})
    check("Service Bus refuses keys (identity only)", namespace.get("disableLocalAuth") is True)
    storage = one(resources, "Microsoft.Storage/storageAccounts").get("properties", {})
    check("storage refuses shared keys (identity only)", storage.get("allowSharedKeyAccess") is False)
    vault = one(resources, "Microsoft.KeyVault/vaults").get("properties", {})
    check("Key Vault uses RBAC", vault.get("enableRbacAuthorization") is True)

    check_redis(resources, variables, settings)
    role_values = set(variables.get("roles", {}).get("value", {}).values())
    check("role assignments use the expected built-in roles", role_values == ROLE_IDS,
          f"unexpected {sorted(role_values - ROLE_IDS)}, missing {sorted(ROLE_IDS - role_values)}")
    dumped = json.dumps(resources) + json.dumps(variables)
    unused = [k for k in variables.get("roles", {}).get("value", {})
              if f'"operand_1": "roles", "operand_2": "{k}"' not in dumped]
    check("every role is assigned", not unused, f"never used: {unused}")

    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    check("parameters file names only declared parameters", parameters.keys() <= params.keys(),
          f"unknown {sorted(parameters.keys() - params.keys())}")
    secure = {n for n, p in params.items() if any(d["type"] == "secure" for d in p["decorators"])}
    check("parameters file holds no secret", not secure & parameters.keys(),
          f"secure parameters present: {sorted(secure & parameters.keys())}")
    return finish()


def check_redis(resources, variables, settings):
    """Azure Managed Redis as Azure ships it: OSS clustering, Entra ID only, no Redis secret."""
    databases = of_type(resources, "Microsoft.Cache/redisEnterprise/databases")
    database = databases[0] if len(databases) == 1 else {"config": {}}
    redis = database["config"].get("properties", {})
    database_name = next((k for k, r in resources.items() if r is database), None)
    check("Redis over TLS on port 10000, no eviction",
          redis.get("clientProtocol") == "Encrypted" and redis.get("port") in (10000, "redisPort")
          and redis.get("evictionPolicy") == "NoEviction",
          json.dumps(redis))
    check("Redis clustering policy is Azure's default (OSS)",
          redis.get("clusteringPolicy") in (None, "OSSCluster"), f"found {redis.get('clusteringPolicy')}")
    check("Redis access keys are off", redis.get("accessKeysAuthentication") == "Disabled",
          f"found {redis.get('accessKeysAuthentication')}")

    assignments = [r["config"] for r in
                   of_type(resources, "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments")]
    for_app = [a for a in assignments
               if a.get("parent") == database_name
               and a.get("properties", {}).get("accessPolicyName") == "default"
               and accessor(a.get("properties", {}).get("user", {}).get("objectId"))
               == "identity.properties.principalId"]
    check("the app's identity has the 'default' access policy on the Redis database", for_app,
          json.dumps(assignments))
    names = {k for k, r in resources.items()
             if r["type"] == "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments"}
    depends = set(one(resources, "Microsoft.Web/sites/config").get("dependsOn", []))
    check("app settings wait for the Redis access policy", names and names <= depends,
          f"dependsOn {sorted(depends)}")

    url = settings.get("REDIS_URL")
    url = variables.get(url, {}).get("value", url) if isinstance(url, str) else json.dumps(url)
    check("REDIS_URL is rediss:// without a password",
          isinstance(url, str) and url.startswith("rediss://") and "@" not in url
          and "listKeys" not in url, f"found {url}")
    check("Redis through the app's identity (REDIS_CREDENTIAL, REDIS_CLIENT_ID)",
          settings.get("REDIS_CREDENTIAL") == "managedidentity"
          and accessor(settings.get("REDIS_CLIENT_ID")) == "identity.properties.clientId",
          f"REDIS_CREDENTIAL={settings.get('REDIS_CREDENTIAL')}, "
          f"REDIS_CLIENT_ID={accessor(settings.get('REDIS_CLIENT_ID'))}")
    vault_secrets = [r["config"].get("name", "") for r in
                     of_type(resources, "Microsoft.KeyVault/vaults/secrets")]
    dumped = json.dumps(resources) + json.dumps(variables)
    check("no Redis secret in Key Vault and no Redis key read",
          not [n for n in vault_secrets if "redis" in str(n).lower()] and "listKeys" not in dumped,
          f"secrets {vault_secrets}")


def finish():
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 1 if passed != len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
