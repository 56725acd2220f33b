-- placeholder: replaced by the registry migration
SELECT 1;
