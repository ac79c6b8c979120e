"""The training loop and what only it uses: several processes (DDP), augmentation.
Nothing else imports this package, so an edit here reruns only train stages."""
