-- Which categories and trades the reviewed taxonomy file owns. Only those are deactivated
-- when they leave the file; rows created by staff uploads are left alone.
ALTER TABLE category_categorie
    ADD COLUMN from_taxonomy boolean NOT NULL DEFAULT false;
ALTER TABLE subcategory_souscategorie
    ADD COLUMN from_taxonomy boolean NOT NULL DEFAULT false;
