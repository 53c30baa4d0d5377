-- normalise_description on a values list (Mattermost's macro-test pattern): returns the
-- spellings whose normalised form is not the expected one.

with

cases as (

    select * from (
        values
        ('CT  Neck/Chest (contrast)', 'ct neck chest contrast'),
        ('CT Head & Neck w/ contrast', 'ct head and neck with contrast'),
        ('ct head and neck WITH contrast', 'ct head and neck with contrast'),
        ('CT Neck W/Contrast', 'ct neck with contrast'),
        ('CT Neck w/o contrast', 'ct neck without contrast'),
        ('PET-CT FDG Skull base to mid thigh', 'pet ct fdg skull base to mid thigh'),
        ('  OPG  ', 'opg'),
        ('Radiographie Thorax Télé', 'radiographie thorax tele'),
        ('US_Neck.', 'us neck'),
        ('---', null),
        ('', null),
        (null, null)
    ) as t (description, expected)

),

normalised as (

    select
        description,
        expected,
        {{ normalise_description('description') }} as actual
    from cases

)

select *
from normalised
where actual is distinct from expected
