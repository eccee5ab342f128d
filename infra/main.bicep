// The smallest set of Azure resources the onboarding function app needs, identity-only throughout:
// a Flex Consumption plan and app (custom handler runtime) with one user-assigned identity, host
// storage without shared keys, the Service Bus queue, Azure Managed Redis with Entra ID only,
// Key Vault for the two secrets left (JWT key, SMTP URL), Application Insights with Entra authentication, and the role assignments between them.
// Deploy into an existing resource group; see infra/README.md. The code goes in afterwards
// (scripts/package, then zip deploy): this template creates an empty app.

targetScope = 'resourceGroup'

@description('Short name used to derive every resource name (letters, digits and hyphens).')
@minLength(3)
@maxLength(20)
param name string = 'onboarding'

@description('Region for every resource. It must offer Flex Consumption and Azure Managed Redis.')
param location string = resourceGroup().location

@description('HS256 key for session tokens, at least 32 bytes (e.g. `openssl rand -base64 48`). Stored in Key Vault only.')
@secure()
@minLength(32)
param jwtSecret string

@description('SMTP URL with credentials, e.g. smtp://USER:PASSWORD@smtp.azurecomm.net:587?tls=required. Stored in Key Vault only.')
@secure()
@minLength(1)
param smtpUrl string

@description('Sender mailbox of the onboarding email; its domain must be one your SMTP provider lets you send from.')
param mailFrom string = 'Onboarding <no-reply@example.com>'

@description('Base URL put in the email\'s link. Empty: the function app\'s own https address.')
param publicUrl string = ''

@description('Most emails a minute your SMTP provider accepts (SMTP_MAX_PER_MINUTE), enforced across every instance through Redis. Azure Communication Services accepts 30 a minute from a custom domain and 5 from an Azure-managed one by default; use your own limit when it differs.')
@minValue(1)
@maxValue(100000)
param smtpMaxPerMinute int = 30

@description('Upper bound on instances the app scales out to.')
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance; the handler itself needs little, argon2 hashing needs some.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Azure Managed Redis size.')
param redisSku string = 'Balanced_B0'

@description('Replicate Redis across two nodes. Redis holds the user accounts: keep it on outside experiments.')
param redisHighAvailability bool = true

@description('Write Redis to disk (AOF, every second) so a restart does not lose accounts.')
param redisPersistence bool = true

@description('Tags applied to every resource.')
param tags object = {}

var token = uniqueString(resourceGroup().id, name)
var compactName = take(toLower(replace(name, '-', '')), 9)
var queueName = 'onboarding' // must match queueName in createUser/, verifyEmail/ and sendOnboarding/function.json
var deploymentContainerName = 'app-package'
var redisPort = 10000

// Built-in role definition ids (the same in every tenant).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// ---------------------------------------------------------------------------------------------
// Identity: one user-assigned identity for everything the app reaches (host storage, deployment
// package, Service Bus, Redis, Key Vault references, Application Insights). No keys or connection
// strings with secrets in app settings.

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}-${token}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------------------------
// Host storage (AzureWebJobsStorage) and the deployment package container, identity-only.

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${compactName}${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

var storageRoleIds = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in storageRoleIds: {
    name: guid(storage.id, identity.id, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// ---------------------------------------------------------------------------------------------
// Service Bus: the queue between createUser and sendOnboarding. Local (SAS) auth is off; the app
// connects with its identity. After 10 failed deliveries a message moves to the dead-letter queue
// (onboarding/$deadletterqueue) instead of being lost.

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: 'sb-${name}-${token}'
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: serviceBus
  name: queueName
  properties: {
    maxDeliveryCount: 10
    deadLetteringOnMessageExpiration: true
    lockDuration: 'PT1M'
    defaultMessageTimeToLive: 'P14D'
    requiresSession: false
    requiresDuplicateDetection: false
  }
}

// Sender for createUser's output binding, Receiver for sendOnboarding's trigger, on this queue
// only. (Azure Service Bus Data Owner would also let the platform read the exact queue length
// for scaling decisions; without it the extension estimates by peeking, which is enough here.)
var serviceBusRoleIds = [
  roles.serviceBusDataSender
  roles.serviceBusDataReceiver
]

resource serviceBusRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in serviceBusRoleIds: {
    name: guid(queue.id, identity.id, roleId)
    scope: queue
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// ---------------------------------------------------------------------------------------------
// Azure Managed Redis: TLS only on port 10000, as Azure creates it by default. It stores
// accounts, so nothing is evicted.
//
// Clustering: Azure's default, the OSS policy (the cluster API; the client follows MOVED and the
// shards' own ports), which the handler detects and follows by itself (issue 17). The policy
// cannot be changed after creation, so a database created earlier with EnterpriseCluster keeps
// it (the handler works with both); moving means a new database.
// https://learn.microsoft.com/en-us/azure/redis/choose-clustering-policy
//
// Authentication: Microsoft Entra ID only, with access keys off (Azure's default for new caches
// and Microsoft's advice), so there is no Redis secret anywhere. The app's identity gets the
// data access policy "default" (the only one supported) on the database, and the handler signs
// in with the identity's tokens (REDIS_CREDENTIAL=managedidentity). Entra ID works over TLS only.
// https://learn.microsoft.com/en-us/azure/redis/entra-for-authentication

resource redis 'Microsoft.Cache/redisEnterprise@2025-04-01' = {
  name: 'redis-${name}-${token}'
  location: location
  tags: tags
  sku: {
    name: redisSku
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: redisHighAvailability ? 'Enabled' : 'Disabled'
  }
}

var persistenceOn = {
  aofEnabled: true
  aofFrequency: '1s'
}
var persistenceOff = {
  aofEnabled: false
  rdbEnabled: false
}

resource redisDatabase 'Microsoft.Cache/redisEnterprise/databases@2025-04-01' = {
  parent: redis
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: redisPort
    // Azure's default, written out so the choice is visible.
    clusteringPolicy: 'OSSCluster'
    evictionPolicy: 'NoEviction'
    accessKeysAuthentication: 'Disabled'
    persistence: redisPersistence ? persistenceOn : persistenceOff
  }
}

// The identity's object id becomes a Redis user with the "default" access policy (all data
// commands); it is the user name the handler signs in with (the token's oid claim).
// https://learn.microsoft.com/en-us/azure/templates/microsoft.cache/2025-04-01/redisenterprise/databases/accesspolicyassignments
resource redisAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-04-01' = {
  parent: redisDatabase
  name: 'functionapp'
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: identity.properties.principalId
    }
  }
}

// No password: the token is the password (see above).
var redisUrl = 'rediss://${redis.properties.hostName}:${redisPort}'

// ---------------------------------------------------------------------------------------------
// Key Vault (RBAC) with the two secrets the handler reads (Redis needs none: Entra ID). Public network access stays on:
// Flex Consumption cannot resolve Key Vault references against a network-restricted vault.

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv${compactName}${token}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource jwtSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'JWT-SECRET'
  properties: {
    value: jwtSecret
    contentType: 'text/plain'
  }
}

resource smtpUrlValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'SMTP-URL'
  properties: {
    value: smtpUrl
    contentType: 'text/plain'
  }
}

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// App settings point at versionless secret URIs: after a secret is updated, the app picks up the
// new value on its next restart (or within a day).

// ---------------------------------------------------------------------------------------------
// Monitoring: workspace-based Application Insights that accepts only Entra-authenticated
// telemetry, sent by the host with the app's identity.

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}-${token}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource insightsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------------------------
// The Flex Consumption plan and the function app. The runtime is declared in functionAppConfig
// (custom handler, version 1.0); on Flex Consumption FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION are not app settings.

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${name}-${token}'
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

// App settings are a child resource so they are applied after the role assignments exist: a Key
// Vault reference resolved before its role is in place stays unresolved until the next restart.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Host storage through the identity (no connection string, no key).
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    // The "ServiceBusConnection" named in function.json, through the identity.
    ServiceBusConnection__fullyQualifiedNamespace: '${serviceBus.name}.servicebus.windows.net'
    ServiceBusConnection__credential: 'managedidentity'
    ServiceBusConnection__clientId: identity.properties.clientId
    // Telemetry, authenticated with the identity (local auth is off on the component).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    // What the handler itself reads (crates/onboarding/src/config/). Secrets stay in Key Vault.
    // Redis through the identity, named as the host names its own identity-based connections.
    REDIS_URL: redisUrl
    REDIS_CREDENTIAL: 'managedidentity'
    REDIS_CLIENT_ID: identity.properties.clientId
    JWT_SECRET: '@Microsoft.KeyVault(SecretUri=${jwtSecretValue.properties.secretUri})'
    SMTP_URL: '@Microsoft.KeyVault(SecretUri=${smtpUrlValue.properties.secretUri})'
    MAIL_FROM: mailFrom
    PUBLIC_URL: empty(publicUrl) ? 'https://${functionApp.properties.defaultHostName}' : publicUrl
    // The provider's rate, shared by every instance through Redis, so a burst of sign-ups waits
    // for send slots instead of drawing throttle replies (see the README's "Provider limits").
    SMTP_MAX_PER_MINUTE: string(smtpMaxPerMinute)
    RUST_LOG: 'info'
  }
  dependsOn: [
    storageRoles
    serviceBusRoles
    vaultRole
    insightsRole
    redisAccess
  ]
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output identityClientId string = identity.properties.clientId
output serviceBusNamespace string = '${serviceBus.name}.servicebus.windows.net'
output queueName string = queue.name
output keyVaultName string = vault.name
output redisHostName string = redis.properties.hostName
output applicationInsightsName string = appInsights.name
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
