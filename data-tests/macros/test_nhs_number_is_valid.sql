-- nhs_number_is_valid on the modulus-11 edge cases: returns the numbers judged wrongly.

with

cases as (

    select * from (
        values
        ('9434765919', true),   -- valid
        ('9434765918', false),  -- wrong check digit
        ('4010232137', true),   -- valid
        ('1000000060', true),   -- remainder 0: check digit 11 -> 0
        ('1000000010', false),  -- remainder 1: check digit 10, never valid
        ('9876543210', true),   -- check digit 0 from 11
        ('943476591', false),   -- 9 digits
        ('94347659190', false), -- 11 digits
        ('943 476 5919', false),-- spaces must be removed first
        ('943476591X', false),  -- not a digit
        ('', false),
        (null, false)
    ) as t (nhs_number, expected)

),

judged as (

    select
        nhs_number,
        expected,
        {{ nhs_number_is_valid('nhs_number') }} as actual
    from cases

)

select *
from judged
where actual is distinct from expected
