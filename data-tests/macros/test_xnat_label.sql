-- xnat_label turns any text into a label XNAT accepts: returns the values it gets wrong.

with

cases as (

    select * from (
        values
        ('RA 1234/5', 'RA_1234_5'),
        ('RJ07000012', 'RJ07000012'),
        (' ACC-1_b ', 'ACC-1_b'),
        ('Ä.1', '__1'),
        ('', null),
        (null, null)
    ) as t (value, expected)

),

labelled as (

    select
        value,
        expected,
        {{ xnat_label('value') }} as actual
    from cases

)

select *
from labelled
where actual is distinct from expected
