"""The radiopharmacy's records, assembled from its instruments (issue 25; CONTRACT §5, §7).

Every record is an item of the `qc` stream with a `kind` (`test`, `elution`, `batch`,
`release`, `dispensing`, `shipment`, `receipt`, `waste`), signed by a person (password at
signing, meaning, segregation of duties, audit) through `agent.records.signer.RecordSigner`,
the one place where records are signed, and kept append-only in the agent's state database
(`agent.records.store.RecordStore`): a correction is a new record naming the first by
`corrects`. The rules each kind is judged by are data of the configuration's `[records]`
section (`agent.records.config`), each with the guidance it cites.
"""
