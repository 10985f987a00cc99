"""Device identities from the host: the fleet CA, bulk provisioning, registration,
revocation, rotation (also over the air) and claim batches; the ``thingkit ca``,
``provision``, ``register``, ``revoke``, ``rotate`` and ``teardown`` commands."""
