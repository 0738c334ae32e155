"""Everything that talks to Shopify or reads landing files. Never imports dagster."""
